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
from cogcore.distill.teachers import conversation, make_trace

# Query phrasings per relation: the first is tried first, the rest are reformulations.
QUERIES = {
    "born_in": ["{s} birthplace", "where was {s} born", "{s} native city"],
    "spouse": ["{s} spouse", "who is {s} married to", "{s} husband or wife"],
    "works_for": ["{s} employer", "where does {s} work", "{s} employed by"],
    "birth_year": ["{s} birth year", "year {s} was born", "{s} year of birth"],
    "country": ["{s} country", "which country is {s} in", "{s} located in country"],
    "population": ["{s} population", "how many people live in {s}", "{s} residents"],
    "headquarters": ["{s} headquarters", "where is {s} based", "{s} head office"],
    "founded": ["{s} founding year", "when was {s} established", "{s} founded in year"],
    "founder": ["{s} founder", "who founded {s}", "{s} started by"],
}

# How a found fact is stated in the reasoning.
FACT = {
    "born_in": "{s} was born in {o}",
    "spouse": "{s} is married to {o}",
    "works_for": "{s} works for {o}",
    "birth_year": "{s} was born in {o}",
    "country": "{s} is in {o}",
    "population": "{s} has a population of {o}",
    "headquarters": "{s} is headquartered in {o}",
    "founded": "{s} was founded in {o}",
    "founder": "{s} was founded by {o}",
}

# What the reasoning says it is looking for.
NEED = {
    "born_in": "the birthplace of {s}",
    "spouse": "the spouse of {s}",
    "works_for": "the employer of {s}",
    "birth_year": "the birth year of {s}",
    "country": "the country of {s}",
    "population": "the population of {s}",
    "headquarters": "the headquarters of {s}",
    "founded": "the founding year of {s}",
    "founder": "the founder of {s}",
}

ORDER_MEANS = {
    ("birth_year", "min"): "Born first means the smaller year",
    ("birth_year", "max"): "Younger means the larger year",
    ("population", "min"): "Smaller means the smaller count",
    ("population", "max"): "More people means the larger count",
    ("founded", "min"): "Founded earlier means the smaller year",
    ("founded", "max"): "Newer means the larger year",
}


COLUMNS = ("ones", "tens", "hundreds", "thousands", "ten-thousands", "hundred-thousands")


def subtraction(big: int, small: int) -> str:
    """`big - small` written out column by column from the ones, borrowing by equal additions (as taught
    on paper in much of Europe): a column whose top digit is the smaller takes ten (`6 - 9, borrow: 16 - 9
    = 7`) and pays it back as one more on the next column's lower digit (`tens: 6 + 1 = 7, 1 - 7, borrow:
    11 - 7 = 4`); then the digits read back from the left. Each step is a fact about the two numbers
    written just before it (`6 + 1`, `1 - 7`, `11 - 7`), which a small student can learn: the whole
    difference in one go is a lookup table it cannot, and a column that both owes and borrows in one
    expression (`1 + 10 - 1 - 6`) was the step the demo student got wrong most."""
    a, b = str(big), str(small).rjust(len(str(big)), "0")
    steps, digits, borrow = [], [], 0
    for column, (x, y) in enumerate(zip(reversed(a), reversed(b), strict=True)):
        x, y = int(x), int(y)
        parts = []
        if borrow:
            parts.append(f"{y} + 1 = {y + 1}")
            y += 1
        borrow = int(x < y)
        digit = 10 * borrow + x - y
        parts.append(f"{x} - {y}, borrow: 1{x} - {y} = {digit}" if borrow else f"{x} - {y} = {digit}")
        steps.append(f"{COLUMNS[column]}: {', '.join(parts)}")
        digits.append(digit)
    read = " ".join(map(str, reversed(digits)))
    return (
        f"{big} - {small}, column by column: {'; '.join(steps)}. "
        f"Digits from the left: {read}, so {big} - {small} = {big - small}."
    )


def decision(x: int, y: int, a: str, b: str, attribute: str, pick: str) -> str:
    """Which of `a` (with the number `x`) and `b` (with `y`) a compare question on `attribute` wants (`pick`:
    min or max), decided as on paper and written so that no step routes a copy on a bit the student
    computed: each number's deciding digit (or digit count) is written with its name right after it
    (`9 Brusaes Mining Company vs 1 Stiarastiax Foundry`), then the question's way round (`ORDER_MEANS`)
    picks a digit, a fact of two digits, and the name follows that digit, so copying it keys on the digit,
    which differs between the two. Written with a comparison sentence instead (`x is less than y, so B is
    newer`), the students named the right one 0.44-0.56 of the time teacher-forced: they could not choose
    which name to copy from the comparison they had written, nor copy a name whose one-token context
    (`9 (`) both names share."""
    p, q = str(x), str(y)
    chooser, means = (min if pick == "min" else max), ORDER_MEANS[attribute, pick]
    if len(p) != len(q):
        want, winner = chooser((len(p), a), (len(q), b))
        step = f"{x} has {len(p)} digits and {y} has {len(q)}: {len(p)} {a} vs {len(q)} {b}."
        return f"{step} {means}, so {'fewer' if pick == 'min' else 'more'} digits: {want} {winner}."
    i, differ = _first_difference(p, q)
    want, winner = chooser((p[i], a), (q[i], b))
    step = f"{differ} {p[i]} {a} vs {q[i]} {b}."
    return f"{step} {means}, so the {'smaller' if pick == 'min' else 'larger'} digit: {want} {winner}."


def _first_difference(p: str, q: str) -> tuple[int, str]:
    """Where two different numbers of as many digits first differ, and the step finding it: the digit
    pairs read from the left, each marked `same` until the first that differs (`from the left: 1 and 1
    same, 8 and 9 differ:`), so each mark is a fact of the two digits just written. Named by its position
    instead (`first differ at digit 2`), the demo student counted to the wrong digit in 5 of its 11 wrong
    compares (run 72)."""
    i = next(i for i, (u, v) in enumerate(zip(p, q, strict=True)) if u != v)
    pairs = [f"{u} and {v} same" for u, v in zip(p[:i], q[:i], strict=True)] + [f"{p[i]} and {q[i]} differ"]
    return i, f"Both have {len(p)} digits; from the left: {', '.join(pairs)}:"


class Rejected(Exception):
    """The oracle could not write a trace whose facts all come from retrieval. `reason` is a short code
    for counting, `detail` says what happened, `messages` is the trace so far."""

    def __init__(self, reason: str, detail: str, messages: list[dict]):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail, self.messages = reason, detail, messages


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
