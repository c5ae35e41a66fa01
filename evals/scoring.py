"""Scores for one answer and for a set of them: exact match, token F1, abstention and SimpleQA grades.

A prediction is the text of the final `Answer:` line (`core.tools.final_answer`), or None when the
model wrote no such line. Answers are compared after SQuAD normalisation, against every gold alias,
keeping the best. Grades follow SimpleQA: `correct`, `incorrect` or `not_attempted`, where abstaining
(`Answer: unknown`, contract 3) is `not_attempted` unless the question has no answer, in which case
abstaining is the correct answer. A missing answer line is `incorrect`: it is a failure to answer in
the contract's format, not a decision to abstain, and counting it as an abstention would let a model
that never finishes raise its deferral score D.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from cogcore.core.answers import aliases, exact_match, normalize_answer, token_f1  # noqa: F401 (re-exported: the scoring API)
from cogcore.core.tools import UNKNOWN, final_answer

CORRECT, INCORRECT, NOT_ATTEMPTED = "correct", "incorrect", "not_attempted"
GRADES = (CORRECT, INCORRECT, NOT_ATTEMPTED)


def abstained(prediction: str | None) -> bool:
    """Whether the prediction is the abstention `unknown` (contract 3)."""
    return prediction is not None and normalize_answer(prediction) == UNKNOWN


def grade(prediction: str | None, golds: str | Sequence[str]) -> str:
    """SimpleQA grade of one prediction: `correct`, `incorrect` or `not_attempted`.

    Correct means a normalised exact match with a gold alias. An unanswerable question has the gold
    `unknown`: abstaining is then correct and any answer (or none) is incorrect.
    """
    if prediction is None:
        return INCORRECT
    if any(normalize_answer(g) == UNKNOWN for g in aliases(golds)):
        return CORRECT if abstained(prediction) else INCORRECT
    if abstained(prediction):
        return NOT_ATTEMPTED
    return CORRECT if exact_match(prediction, golds) else INCORRECT


def score(final_text: str | None, question: dict) -> dict:
    """The record `summarize` takes, for the final assistant turn `final_text` on a world question."""
    prediction = final_answer(final_text)
    golds = question["answers"]
    return {
        "id": question["id"],
        "type": question["type"],
        "prediction": prediction,
        "grade": grade(prediction, golds),
        "em": exact_match(prediction, golds),
        "f1": token_f1(prediction, golds),
    }


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def _stats(records: list[dict]) -> dict:
    n = len(records)
    counts = Counter(r["grade"] for r in records)
    correct, incorrect, not_attempted = (counts[g] for g in GRADES)
    return {
        "n": n,
        "accuracy": _ratio(correct, n),
        "em": _ratio(sum(r["em"] for r in records), n),
        "f1": _ratio(sum(r["f1"] for r in records), n),
        "correct": correct,
        "incorrect": incorrect,
        "not_attempted": not_attempted,
        "correct_share": _ratio(correct, n),
        "incorrect_share": _ratio(incorrect, n),
        "not_attempted_share": _ratio(not_attempted, n),
        # SimpleQA's "accuracy given attempted": how often an answer the model commits to is right.
        "accuracy_given_attempted": _ratio(correct, correct + incorrect),
        # Contract 5's D: of the answers that are not correct, the share that abstained rather than guessed.
        "deferral": _ratio(not_attempted, not_attempted + incorrect),
    }


def summarize(records: Iterable[dict]) -> dict[str, dict]:
    """Scores per question type and `overall` from records {"type", "grade", "em", "f1"}.

    Ratios whose denominator is empty are None rather than 0, so "nothing to measure" is not read as
    a score: accuracy_given_attempted when nothing was attempted, deferral when everything was correct.
    """
    records = list(records)
    for i, r in enumerate(records):
        if r["grade"] not in GRADES:
            raise ValueError(f"records[{i}].grade: {r['grade']!r} is not one of {', '.join(GRADES)}")
    types = sorted({r["type"] for r in records})
    summary = {t: _stats([r for r in records if r["type"] == t]) for t in types}
    summary["overall"] = _stats(records)
    return summary


def bootstrap_ci(
    values: Sequence[float],
    stat: Callable[[np.ndarray], float] = np.mean,
    n_resamples: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap (1 - alpha) confidence interval of `stat(values)`; the same seed, the same CI.

    For accuracy pass the 0/1 correctness of each question.
    """
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    rng = np.random.default_rng(seed)
    # One resample at a time: memory stays O(len(values)) however large the eval set.
    stats = np.array([stat(values[rng.integers(0, values.size, values.size)]) for _ in range(n_resamples)])
    low, high = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def search_r1_em(prediction: str | None, golden_answers: str | Sequence[str]) -> int:
    """Exact match as Search-R1 scores it (`verl/utils/reward_score/qa_em.py`: `normalize_answer`,
    `em_check`): lowercase, strip punctuation, strip the articles a/an/the, collapse whitespace; 1 when the
    prediction equals any golden answer. No answer line scores 0, as a response without `<answer>` does."""
    if prediction is None:
        return 0

    def normalize(s: str) -> str:
        s = s.lower()
        s = "".join(ch for ch in s if ch not in set(string.punctuation))
        s = re.sub(r"\b(a|an|the)\b", " ", s)
        return " ".join(s.split())

    golds = [golden_answers] if isinstance(golden_answers, str) else golden_answers
    return int(any(normalize(g) == normalize(prediction) for g in golds))


def search_r1_score(records: list[dict], questions: list[dict]) -> float:
    """Mean Search-R1 EM of graded records over the questions' gold answers (`golden_answers`)."""
    golds = {q["id"]: q["answers"] for q in questions}
    return float(np.mean([search_r1_em(r["prediction"], golds[r["id"]]) for r in records]))
