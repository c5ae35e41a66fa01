"""Answer matching, the one definition every stage uses: SQuAD-normalised exact match and token F1
against a list of gold aliases. It lives in core so that trace filtering (distill) and scoring (evals)
judge an answer the same way; evals/scoring.py builds the grades and scores on it.

Support, the one definition of a grounded answer: the answer is the fact a trace asserts. It is supported
when one passage the trace retrieved holds it (after SQuAD normalisation), or, for a number, when it is
the sum or difference of two numbers the retrieved passages hold (an arithmetic answer is computed, not
quoted). `unknown` asserts nothing. Trace filtering keeps only supported traces; generation retries an
answer that is not (`grounded`, a verifier of core.retries). Neither looks at a gold answer.
"""

from __future__ import annotations

import html
import re
import string
from collections import Counter
from collections.abc import Sequence
from itertools import combinations

from cogcore.core.retries import Verdict
from cogcore.core.tools import UNKNOWN, final_answer, passage_lines

_PUNCTUATION = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(s: str) -> str:
    """SQuAD normalisation: lowercase, drop punctuation, drop articles, collapse whitespace."""
    s = "".join(ch for ch in s.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", s).split())


def aliases(golds: str | Sequence[str]) -> list[str]:
    # A bare string would otherwise be iterated character by character.
    out = [golds] if isinstance(golds, str) else list(golds)
    if not out:
        raise ValueError("no gold answers to score against; a question needs at least one answer")
    return out


def exact_match(prediction: str | None, golds: str | Sequence[str]) -> float:
    """1.0 if the normalised prediction equals any normalised gold alias, else 0.0."""
    if prediction is None:
        return 0.0
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(g) for g in aliases(golds)))


def _f1(pred_tokens: list[str], gold_tokens: list[str]) -> float:
    if not pred_tokens or not gold_tokens:
        # SQuAD v2: an empty answer only matches an empty answer.
        return float(pred_tokens == gold_tokens)
    same = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str | None, golds: str | Sequence[str]) -> float:
    """SQuAD token F1 (bag of normalised tokens), the best over the gold aliases."""
    if prediction is None:
        return 0.0
    pred = normalize_answer(prediction).split()
    return max(_f1(pred, normalize_answer(g).split()) for g in aliases(golds))


_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def _number(text: str) -> float | None:
    text = text.strip()
    return float(text.replace(",", "")) if _NUMBER.fullmatch(text) else None


def retrieved_passages(messages: list[dict]) -> list[str]:
    """The passage lines of the trace's tool turns, unescaped back to the text the index holds."""
    return [
        html.unescape(line) for m in messages if m["role"] == "tool" for line in passage_lines(m["content"])
    ]


def supported(answer: str, messages: list[dict], passages: list[str] | None = None) -> bool:
    """Whether a passage the trace retrieved holds `answer`, or two retrieved numbers give it (see the module
    docstring). `passages`: the passage texts that count instead (default: every one the trace
    retrieved)."""
    target = normalize_answer(answer)
    if target == UNKNOWN:
        return True
    passages = retrieved_passages(messages) if passages is None else passages
    if any(f" {target} " in f" {normalize_answer(p)} " for p in passages):
        return True
    value = _number(answer)
    if value is None:
        return False
    numbers = {float(n.replace(",", "")) for p in passages for n in _NUMBER.findall(p)}
    return any(value in (a + b, abs(a - b)) for a, b in combinations(numbers, 2))


def final(messages: list[dict]) -> str | None:
    """The answer the conversation ends with: its last turn's `Answer:` line, if that turn is the
    assistant's."""
    return final_answer(messages[-1].get("content")) if messages[-1]["role"] == "assistant" else None


def grounded(messages: list[dict]) -> Verdict:
    """A verifier (core.retries): the conversation ends with an answer its own search results support."""
    answer = final(messages)
    return Verdict(answer is not None and supported(answer, messages))


def split_passage(line: str) -> tuple[str, str, str]:
    """(id, title, text) of a rendered passage line `[id] title: text`."""
    pid, _, rest = line[1:].partition("] ")
    title, _, text = rest.partition(": ")
    return pid, title, text
