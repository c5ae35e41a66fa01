"""The suites of DESIGN contract 5: the same questions under three search conditions, and the scores
built from them.

    K  closed book   every search raises SearchUnavailable (the tool answers UNAVAILABLE)
    R  reasoning     every search returns exactly the question's gold passages
    T  tool          live retrieval from the index, in the question's own collection
    D  deferral      from K: not_attempted / (not_attempted + incorrect)
    recall@k         the retriever's recall of the gold passages for the queries the system wrote in T
    T@1, R@1         T and R at the first try: one answer, no retries, step checks or linked support
                     (a system without retries: T@1 = T); "tries" counts the tries per question
    G  compositionality gap: of the multi-hop questions failed in T, the share whose single hops, each
                     asked as a lookup question, all succeed in T

A question is a dict {id, question, answers, type, world?, gold_passages?, hops?}: the records of
`<run_dir>/world/questions/*.jsonl`, or a user QA file (type defaults to "qa").
"""

from __future__ import annotations

import json
import time

from tqdm import tqdm

from cogcore.core.tools import SearchUnavailable
from cogcore.core.worlds.world import LOOKUP_QUESTIONS
from cogcore.evals.scoring import CORRECT, score, summarize

SUITES = ("K", "R", "T")
MULTI_HOP = ("compose", "compare", "arithmetic")


def search_for(suite: str, questions: list[dict], retriever, passages: dict[str, dict]):
    """The suite's search function over `questions` (row i is questions[i])."""

    def collection(row: int):
        return questions[row].get("world")

    def gold(row: int) -> list[dict]:
        return [passages[pid] for pid in questions[row].get("gold_passages", [])]

    if suite == "K":

        def search(row: int, query: str, k: int) -> list[dict]:
            raise SearchUnavailable

    elif suite == "R":

        def search(row: int, query: str, k: int) -> list[dict]:
            return gold(row)

        search.gold = gold  # a system without the tool gets the gold passages in its prompt
    elif suite == "T":
        if retriever is None:
            raise ValueError("suite T needs an index: set eval.index or build <run_dir>/index")

        def search(row: int, query: str, k: int) -> list[dict]:
            return retriever.search(query, k, collection(row))

    else:
        raise ValueError(f"eval.suites: unknown suite {suite!r}; choose from {', '.join(SUITES)}")
    return search


class Progress:
    """A system's progress through a suite, as a tqdm bar of questions answered with the tries spent: a
    system calls `done(traces)` as each batch of answers is finished."""

    def __init__(self, name: str, suite: str, total: int):
        self.bar = tqdm(total=total, desc=f"eval {name} {suite}", unit="q", mininterval=2.0)
        self.tries = 0

    def done(self, traces: list[dict]) -> None:
        self.tries += sum(t.get("tries", 1) for t in traces)
        self.bar.set_postfix(tries=self.tries, refresh=False)
        self.bar.update(len(traces))

    def close(self) -> None:
        self.bar.close()


def run_suite(
    system, suite: str, questions: list[dict], retriever, passages: dict[str, dict], label: str | None = None
) -> dict:
    """Answer every question under the suite, showing progress (as `label`, default the suite); graded
    records (with their traces) and timing."""
    search = search_for(suite, questions, retriever, passages)
    progress = Progress(system.name, label or suite, len(questions))
    started = time.perf_counter()
    try:
        traces = system.answer(questions, search, progress.done)
    finally:
        progress.close()
    seconds = time.perf_counter() - started
    records = []
    for q, trace in zip(questions, traces, strict=True):
        q = {**q, "type": q.get("type", "qa")}
        record = {**score(final_text(trace["messages"]), q), "suite": suite, **trace}
        # The one-try score (T@1, R@1): the first try where a retry was kept, else the answer itself (a
        # system without retries, or an answer right or kept at its first try).
        first = score(final_text(trace["first"]["messages"]), q) if "first" in trace else record
        record["at1"] = {k: first[k] for k in ("prediction", "grade", "em", "f1")}
        record.setdefault("tries", 1)
        records.append(record)
    return {"records": records, "seconds": seconds}


def final_text(messages: list[dict]) -> str | None:
    """The content of a trace's final assistant turn (None when it ends otherwise)."""
    last = messages[-1]
    return last["content"] if last["role"] == "assistant" else None


def at_one(records: list[dict]) -> list[dict]:
    """The records as graded at the first try (what `summarize` reads of them)."""
    return [{**r, **r["at1"]} for r in records]


def queries_of(messages: list[dict]) -> list[str]:
    """The search queries a trace issued (malformed calls skipped: they searched nothing)."""
    out = []
    for m in messages:
        for call in m.get("tool_calls") or []:
            try:
                args = json.loads(call["function"]["arguments"])
            except json.JSONDecodeError:
                continue
            if isinstance(args, dict) and isinstance(args.get("query"), str):
                out.append(args["query"])
    return out


def recall_at_k(records: list[dict], questions: list[dict], retriever, k: int) -> float | None:
    """Mean over questions with gold passages of the share of them in the top k of any query the system
    wrote (None when no question has gold passages or the system never searched)."""
    shares = []
    for record, q in zip(records, questions, strict=True):
        gold = set(q.get("gold_passages") or [])
        queries = queries_of(record["messages"])
        if not gold or not queries:
            continue
        found = set()
        for hits in retriever.search_batch(queries, k, [q.get("world")] * len(queries)):
            found |= {p["id"] for p in hits}
        shares.append(len(gold & found) / len(gold))
    return sum(shares) / len(shares) if shares else None


def hop_questions(question: dict) -> list[dict]:
    """Each hop of a multi-hop world question asked on its own, as a lookup question: like the world's own
    lookups it carries its one hop, so that a system that reads hops (the oracle) can answer it."""
    return [
        {
            "id": f"{question['id']}-hop{i}",
            "world": question["world"],
            "type": "lookup",
            "question": LOOKUP_QUESTIONS[hop["relation"]][0].format(s=hop["subject"]),
            "answers": [str(hop["object"])],
            "gold_passages": [hop["passage"]],
            "hops": [hop],
        }
        for i, hop in enumerate(question["hops"])
    ]


def compositionality_gap(system, t_records: list[dict], questions: list[dict], retriever, passages) -> dict:
    """G: of the multi-hop questions the system failed with the live tool, the share whose every single
    hop it answers correctly on its own; None when it failed none (or the questions carry no hops)."""
    failed = [
        q
        for q, r in zip(questions, t_records, strict=True)
        if q.get("type") in MULTI_HOP and q.get("hops") and r["grade"] != CORRECT
    ]
    if not failed:
        return {"G": None, "failed_multi_hop": 0, "hops_all_correct": 0}
    hops = [hop_questions(q) for q in failed]
    flat = [h for group in hops for h in group]
    records = run_suite(system, "T", flat, retriever, passages, label="G (hops, T)")["records"]
    graded = iter(r["grade"] == CORRECT for r in records)
    all_correct = sum(all([next(graded) for _ in group]) for group in hops)
    return {"G": all_correct / len(failed), "failed_multi_hop": len(failed), "hops_all_correct": all_correct}


def accuracy(records: list[dict]) -> dict:
    """Accuracy per question type and overall."""
    return {t: s["accuracy"] for t, s in summarize(records).items()}
