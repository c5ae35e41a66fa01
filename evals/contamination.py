"""Contamination check: word n-gram overlap between training traces and eval questions.

Every eval question is cut into word n-grams (lowercased, punctuation as a separator) and looked up
in every training trace, twice: in its user turns (a leaked question) and in its whole text (system,
reasoning, search queries, retrieved passages, answers; a leaked question or its facts anywhere). A
question shorter than n words is one gram of its full length, so a short question still registers
when it appears verbatim; an exact duplicate of a question therefore always counts.

Why n = 10 by default: synthetic-world questions are templates filled with entity names, and the
templates recur in every world. The longest run of template words is 8 ("what is the population of
the city where {s} was born", "what is the difference between the populations of {a} and {b}"), so
with n <= 8 a held-out question matches training on its template alone. Held-out worlds share no
whole name with training, but they do share first names ("Rubrel Braluth" held out, "Rubrel Thufial"
in training), so n = 9 still matches "... the city where rubrel". From n = 10 a gram must hold a
whole entity name, which is what a leak is. Measured on the default world (120 training worlds, 240
held-out questions, against the training questions and passages): 31 held-out questions overlap at
n = 8, 3 at n = 9 ("what is the population of the city where rubrel") and none at n = 10. The tiny
world's 19 held-out questions happen to hold none of the long templates: no overlap from n = 8.

The scan streams over the traces and keeps only the eval questions' grams in memory.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

DEFAULT_N = 10
MAX_LISTED = 20

_WORD = re.compile(r"\w+")


class ContaminationError(ValueError):
    """An eval set overlaps the training traces beyond the allowed share."""


def words(text: str) -> tuple[str, ...]:
    """Lowercased words; punctuation only separates them."""
    return tuple(_WORD.findall(text.lower()))


def ngrams(tokens: tuple[str, ...], n: int) -> set[tuple[str, ...]]:
    return {tokens[i : i + n] for i in range(len(tokens) - n + 1)}


def question_grams(question: str, n: int) -> set[tuple[str, ...]]:
    """The question's n-grams, or the whole question as one gram when it has fewer than n words."""
    tokens = words(question)
    return ngrams(tokens, n) if len(tokens) >= n else ({tokens} if tokens else set())


def trace_segments(trace: dict) -> list[tuple[str, str]]:
    """(where, text) pieces of a trace: `user` for user turns, `text` for everything else.

    Pieces are scanned apart so that no gram spans two turns.
    """
    segments = []
    for m in trace["messages"]:
        if m.get("content"):
            segments.append(("user" if m["role"] == "user" else "text", m["content"]))
        for call in m.get("tool_calls", []):
            segments.append(("text", call["function"]["arguments"]))
    if trace.get("metadata", {}).get("question"):
        segments.append(("text", trace["metadata"]["question"]))
    return segments


def contamination_report(
    train_traces: Iterable[dict], eval_questions: list[dict], n: int = DEFAULT_N
) -> dict:
    """Which eval questions share an n-gram with the training traces, with one example gram each."""
    if n < 1:
        raise ValueError(f"contamination n must be a positive number of words, got n={n}")
    # gram length -> gram -> ids of the questions holding it (short questions bring their own lengths).
    index: dict[int, dict[tuple[str, ...], list[str]]] = {}
    normalised = {}
    for q in eval_questions:
        normalised[q["id"]] = words(q["question"])
        for gram in question_grams(q["question"], n):
            index.setdefault(len(gram), {}).setdefault(gram, []).append(q["id"])

    hits: dict[str, dict[str, dict]] = {"user": {}, "text": {}}  # where -> question id -> first example
    user_turns: set[tuple[str, ...]] = set()
    n_traces = 0
    for trace in train_traces:
        n_traces += 1
        for where, text in trace_segments(trace):
            tokens = words(text)
            if where == "user":
                user_turns.add(tokens)
            for length, grams in index.items():
                # In reading order, so the example gram of a report is the same on every run.
                for gram in (tokens[i : i + length] for i in range(len(tokens) - length + 1)):
                    for qid in grams.get(gram, ()):
                        example = {"ngram": " ".join(gram), "trace": trace["id"], "where": where}
                        hits[where].setdefault(qid, example)
                        hits["text"].setdefault(qid, example)  # the whole text includes the user turns

    leaked = [q for q in eval_questions if q["id"] in hits["text"]]
    total = len(eval_questions)
    return {
        "n": n,
        "questions": total,
        "traces": n_traces,
        "leaked": len(leaked),
        "share": len(leaked) / total if total else 0.0,
        "leaked_in_user_turns": len(hits["user"]),
        "share_in_user_turns": len(hits["user"]) / total if total else 0.0,
        "exact_duplicates": sum(normalised[q["id"]] in user_turns for q in eval_questions),
        "ids": [q["id"] for q in leaked[:MAX_LISTED]],
        # Prefer the user-turn example: a question pasted into a prompt is the clearest evidence.
        "examples": [
            {"id": q["id"], "question": q["question"], **hits["user"].get(q["id"], hits["text"][q["id"]])}
            for q in leaked[:MAX_LISTED]
        ],
    }


def check_contamination(
    train_traces: Iterable[dict], eval_questions: list[dict], n: int = DEFAULT_N, max_share: float = 0.0
) -> dict:
    """The contamination report; ContaminationError when more than `max_share` of the questions leaked."""
    report = contamination_report(train_traces, eval_questions, n)
    if report["share"] > max_share:
        shown = "; ".join(
            f"{e['id']} ({e['question']!r}) shares {e['ngram']!r} with "
            f"{'a user turn' if e['where'] == 'user' else 'the text'} of trace {e['trace']}"
            for e in report["examples"][:5]
        )
        raise ContaminationError(
            f"{report['leaked']} of {report['questions']} eval questions ({report['share']:.1%}, allowed "
            f"{max_share:.1%}) share a {n}-word n-gram (the whole question when shorter) with the "
            f"training traces ({report['leaked_in_user_turns']} in user turns, "
            f"{report['exact_duplicates']} exact duplicates), e.g. {shown}. Fix: evaluate on a world the "
            f"training never saw (regenerate the eval world as a held-out split or with another seed), "
            f"or remove the leaked traces from the training set."
        )
    return report
