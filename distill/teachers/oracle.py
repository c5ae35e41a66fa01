"""The oracle teacher: the ideal trace for a synthetic-world question.

It knows the chain of facts behind the question (`hops`) but states a fact only once a real search has
returned the passage that holds it, so every fact in its traces comes from retrieval. When a search
misses that passage, it says so and reformulates the query; if every phrasing misses, the question is
rejected rather than answered from the oracle's own knowledge.

`oracle_trace` is a generator: it yields `(query, k)` searches and receives their ranked passages, and
returns the finished trace. The driver in `distill/traces.py` runs many of them at once and batches
their searches.
"""

from __future__ import annotations

from collections.abc import Generator

from cogcore.core.tools import ANSWER_PREFIX, UNAVAILABLE, UNKNOWN, render_results, search_call
from cogcore.core.trace import Rejected
from cogcore.core.worlds.steps import decision, subtraction
from cogcore.core.worlds.templates import FACT, NEED, QUERIES
from cogcore.distill.teachers import conversation, make_trace

Searches = Generator[tuple[str, int], list[dict], dict]


def oracle_trace(
    question: dict,
    k: int,
    reformulations: int,
    system_prompt: str | None = None,
    quote: bool = False,
    offline: bool = False,
    gold: bool = False,
    near_misses: bool = False,
) -> Searches:
    """`quote`: state each found fact by first quoting its retrieved line verbatim (id included), then
    restating it; copying a line is easier for a small student than rephrasing out of it.
    `offline`: the search tool is down for this question (its first call is answered `UNAVAILABLE`), and
    the trace abstains: what a student should do rather than answer from memory (the design's deferral).
    `gold`: the driver answers this question's searches with exactly its gold passages (a perfect
    retriever, as the R suite's search is); recorded in the trace's metadata.
    `near_misses`: when a search misses the passage it needs but returns one with the same relation about
    another entity, quote that line and say whose it is (`That is about Y, not X.`) before rephrasing or
    abstaining, so that a student learns to check whose fact a line states, not only which relation."""
    messages = conversation(question, system_prompt)
    calls = 0
    carried: list[str] = []  # reasoning sentences waiting for the next assistant turn

    def say(text: str) -> None:
        carried.append(text)

    def search(query: str):
        """Issue one search as an assistant turn carrying the pending reasoning; return the passages."""
        nonlocal calls
        call_id = f"call_{calls}"
        calls += 1
        messages.append(
            {
                "role": "assistant",
                "content": " ".join(carried),
                "tool_calls": [search_call(call_id, query, k)],
            }
        )
        carried.clear()
        passages = yield query, k
        messages.append(
            {"role": "tool", "tool_call_id": call_id, "name": "search", "content": render_results(passages)}
        )
        return passages

    def look_up(hop: dict):
        """Search for one fact, reformulating on a miss. Returns the cited fact sentence, or None when
        no phrasing retrieved it (for an unanswerable hop, that is the expected outcome)."""
        phrasings = QUERIES[hop["relation"]][: 1 + reformulations]
        need = NEED[hop["relation"]].format(s=hop["subject"])
        for attempt, template in enumerate(phrasings):
            if attempt:
                say(f"The results do not give {need}. Let me rephrase.")
            passages = yield from search(template.format(s=hop["subject"]))
            found = [p for p in passages if p["id"] == hop["passage"]]
            if found:
                fact = FACT[hop["relation"]].format(s=hop["subject"], o=hop["object"])
                if quote:  # the retrieved line verbatim, then the fact restated from it
                    return f"{render_results(found)} So {fact}."
                return f"{fact} [{hop['passage']}]."
            if near_misses:  # the first returned line of the needed relation, about another entity
                relation, subject = f"-{hop['relation']}", hop["subject"]
                others = (p for p in passages if p["id"].endswith(relation) and p["title"] != subject)
                near = next(others, None)
                if near is not None:
                    say(f"{render_results([near])} That is about {near['title']}, not {subject}.")
        return None

    def finish(reasoning: str, answer: str) -> dict:
        say(reasoning)
        messages.append({"role": "assistant", "content": " ".join(carried) + f"\n{ANSWER_PREFIX} {answer}"})
        return make_trace(question, messages, "oracle", offline, gold)

    def missed(hop: dict) -> Rejected:
        return Rejected(
            "gold_not_retrieved",
            f"passage {hop['passage']} with {NEED[hop['relation']].format(s=hop['subject'])} was not "
            f"retrieved by any of {1 + reformulations} queries (k={k})",
            messages,
        )

    qtype, hops = question["type"], question["hops"]
    if offline:
        hop = hops[0]
        say(f"I need {NEED[hop['relation']].format(s=hop['subject'])}.")
        query = QUERIES[hop["relation"]][0].format(s=hop["subject"])
        call = search_call("call_0", query, k)
        messages.append({"role": "assistant", "content": " ".join(carried), "tool_calls": [call]})
        messages.append({"role": "tool", "tool_call_id": "call_0", "name": "search", "content": UNAVAILABLE})
        carried.clear()
        return finish("The search tool is unavailable, so I cannot look this up.", UNKNOWN)

    if qtype == "unanswerable":
        hop = hops[0]
        need = NEED[hop["relation"]].format(s=hop["subject"])
        say(f"I need {need}.")
        fact = yield from look_up(hop)
        if fact is not None:  # cannot happen with world-made questions, which hold no such passage
            raise Rejected("answer_found", f"unanswerable, but a search found {hop['passage']}", messages)
        return finish(f"No passage gives {need}, so I cannot answer.", UNKNOWN)

    if qtype in ("lookup", "compose"):
        say(f"I need {NEED[hops[0]['relation']].format(s=hops[0]['subject'])}.")
        for i, hop in enumerate(hops):
            fact = yield from look_up(hop)
            if fact is None:
                raise missed(hop)
            if i + 1 < len(hops):
                nxt = hops[i + 1]
                say(f"{fact} Next I need {NEED[nxt['relation']].format(s=nxt['subject'])}.")
        return finish(fact, str(hops[-1]["object"]))

    if qtype in ("compare", "arithmetic"):
        a, b = hops
        attribute = a["relation"]
        say(f"I need {NEED[attribute].format(s=a['subject'])} and {NEED[attribute].format(s=b['subject'])}.")
        fact_a = yield from look_up(a)
        if fact_a is None:
            raise missed(a)
        say(fact_a)
        fact_b = yield from look_up(b)
        if fact_b is None:
            raise missed(b)
        x, y = a["object"], b["object"]
        if qtype == "arithmetic":
            big, small = max(x, y), min(x, y)
            return finish(f"{fact_b} {subtraction(big, small)}", str(big - small))
        winner = question["answers"][0]
        return finish(
            f"{fact_b} {decision(x, y, a['subject'], b['subject'], attribute, question['pick'])}", winner
        )

    raise Rejected("no_plan", f"the oracle has no plan for question type {qtype!r}", messages)
