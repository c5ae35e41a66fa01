"""Answer matching, the one definition every stage uses: SQuAD-normalised exact match and token F1
against a list of gold aliases. It lives in core so that trace filtering (distill) and scoring (evals)
judge an answer the same way; evals/scoring.py builds the grades and scores on it.

Support, the one definition of a grounded answer: the answer is the fact a trace asserts. It is supported
when one passage the trace retrieved holds it (after SQuAD normalisation), or, for a number, when it is
the sum or difference of two numbers the retrieved passages hold (an arithmetic answer is computed, not
quoted). `unknown` asserts nothing. Trace filtering keeps only supported traces; the engine retries an
answer that is not (`GenerationConfig.retries`). Neither looks at a gold answer.

Linked support (`supported(..., linked=True)`, the engine's `GenerationConfig.linked`) is stricter, for
corpora whose passages are titled by the entity they are about (the synthetic worlds): only the passages
the trace cites count, and each must link to the question, its title named in the question or in a
passage cited before it. A quote of another person's line (`Pae Tobras`'s spouse for `Vex Tobras`) is
then no support.
"""

from __future__ import annotations

import html
import re
import string
from collections import Counter
from collections.abc import Sequence
from itertools import combinations

from cogcore.core.tools import UNKNOWN, passage_lines

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


def supported(answer: str, messages: list[dict], linked: bool = False) -> bool:
    """Whether a passage the trace retrieved holds `answer`, or two retrieved numbers give it (see the module
    docstring). With `linked`, only the passages the trace cites count, and every one of them must link
    to the question (`linked_citations`): a fact about someone the question does not lead to is no
    support."""
    target = normalize_answer(answer)
    if target == UNKNOWN:
        return True
    if linked:
        passages = linked_citations(messages)
        if passages is None:
            return False
    else:
        passages = retrieved_passages(messages)
    if any(f" {target} " in f" {normalize_answer(p)} " for p in passages):
        return True
    value = _number(answer)
    if value is None:
        return False
    numbers = {float(n.replace(",", "")) for p in passages for n in _NUMBER.findall(p)}
    return any(value in (a + b, abs(a - b)) for a, b in combinations(numbers, 2))


_CITATION = re.compile(r"^\[([^\]]+)\]")


def split_passage(line: str) -> tuple[str, str, str]:
    """(id, title, text) of a rendered passage line `[id] title: text`."""
    pid, _, rest = line[1:].partition("] ")
    title, _, text = rest.partition(": ")
    return pid, title, text


def asked(messages: list[dict]) -> str:
    """The normalised text of a conversation's user turns: what linked citations start from."""
    return normalize_answer(" ".join(m.get("content") or "" for m in messages if m.get("role") == "user"))


def links(title: str, known: str) -> bool:
    """Whether a passage titled `title` links to what is known so far (`known`: normalised text of the
    question and of the passages linked before it): its title is named there."""
    name = normalize_answer(title)
    return bool(name) and f" {name} " in f" {known} "


def linked_citations(messages: list[dict]) -> list[str] | None:
    """The texts of the passages the trace cites (a line of an assistant turn beginning with a returned
    passage's `[id]`), if each of them links to the question: its title is named in the question or in
    a cited passage linked before it (a compose trace's second passage is about the entity its first
    names). None when one does not link, say a line about another person of the same last name quoted
    for the question's own."""
    returned: dict[str, tuple[str, str]] = {}
    for m in messages:
        if m["role"] == "tool":
            for line in passage_lines(m["content"]):
                pid, title, text = split_passage(html.unescape(line))
                returned.setdefault(pid, (title, text))
    cited: list[tuple[str, str]] = []
    for m in messages:
        for line in (m.get("content") or "").splitlines() if m["role"] == "assistant" else []:
            match = _CITATION.match(line)
            if match and match.group(1) in returned and returned[match.group(1)] not in cited:
                cited.append(returned[match.group(1)])
    known = asked(messages)
    linked: list[str] = []
    pending = cited
    while pending:
        now = [(title, text) for title, text in pending if links(title, known)]
        if not now:
            return None
        for _, text in now:
            linked.append(text)
            known += " " + normalize_answer(text)
        pending = [c for c in pending if c not in now]
    return linked
