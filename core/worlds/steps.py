"""The written-out steps of cogcore's traces, and the check of an answer's steps against its own quotes.

A compare or arithmetic trace ends with steps that a small student can take one at a time: a subtraction
column by column (`subtraction`) or a comparison digit by digit (`decision`). The oracle teacher writes
them, the step drills train them (drills.py), and `fault` checks them in any answer: recomputed from
the facts the answer itself quoted and restated, the first character where its written steps go another
way is where it went wrong. The check also holds each restatement (`So <fact>.`) to the line it follows:
every number and name it writes is one of the line's, each no more often than the line's text writes it.
The engine retries a faulty answer as it retries an unsupported one, branching at the fault
(core/engine.py). Nothing here reads a gold answer: the check needs the trace alone, so it works the same
in evals and in use, and finds nothing to check in an answer written in other words.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from cogcore.core.answers import split_passage
from cogcore.core.retries import Fault, Verdict
from cogcore.core.tools import ANSWER_PREFIX, final_answer, passage_lines

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


@dataclass(frozen=True)
class _Quote:
    message: int
    start: int
    end: int  # of the restatement that follows the line, if any, else of the line
    pid: str
    title: str
    number: int | None  # the fact's number, for a restated line that states one
    restated: str | None  # the restatement after the line (`So <this>.`), if any


_CITED = re.compile(r"(?m)^\[([^\]\n]+)\] ")
_RESTATED = re.compile(r" So ([^\n]*?)\.(?= |\n|$)")
_NUMBER = re.compile(r"\d+")
_NAME = re.compile(r"[A-Z][\w'-]*")


def fault(messages: list[dict]) -> Fault | None:
    """The first place where the assistant turns' written steps disagree with what they quoted (see the
    module docstring), or None."""
    returned = {}
    for m in messages:
        if m.get("role") == "tool":
            for line in passage_lines(m.get("content")):
                returned.setdefault(split_passage(line)[0], line)
    quotes: list[_Quote] = []
    for n, m in enumerate(messages):
        if m.get("role") != "assistant":
            continue
        content = m.get("content") or ""
        for match in _CITED.finditer(content):
            line = returned.get(match.group(1))
            if line is None or not content.startswith(line, match.start()):
                continue
            found = _restatement(n, content, match.start(), line)
            if isinstance(found, Fault):
                return found
            quotes.append(found)
    return _conclusion(messages, quotes)


def steps_verdict(messages: list[dict]) -> Verdict:
    """A verifier (core.retries): the answer's written steps agree with its quotes; else where they first
    do not."""
    found = fault(messages)
    return Verdict(found is None, found)


def _restatement(n: int, content: str, start: int, line: str) -> _Quote | Fault:
    """The quote of `line` at `start` and the restatement after it: each number and each name the
    restatement writes must be in the line."""
    pid, title, text = split_passage(line)
    end = start + len(line)
    said = _RESTATED.match(content, end)
    if said is None:
        return _Quote(n, start, end, pid, title, None, None)
    words, numbers = set(_NAME.findall(line)), set(_NUMBER.findall(text))
    for pattern, allowed in ((_NUMBER, numbers), (_NAME, words)):
        for match in pattern.finditer(said.group(1)):
            if match.group() not in allowed:  # wrong from where it stops being one of the line's words
                agree = max((_common_prefix(match.group(), w) for w in allowed), default=0)
                at = said.start(1) + match.start() + agree
                return Fault(n, at, f"restates {match.group()!r}, not in the line it quotes")
    left = Counter(_NAME.findall(text))  # a fact's text names each of its names as often as it restates
    for match in _NAME.finditer(said.group(1)):  # them (`X is married to X` from `X and Y are ...`)
        left[match.group()] -= 1
        if left[match.group()] < 0 and match.group() in words:
            at = said.start(1) + match.start()
            return Fault(n, at, f"restates {match.group()!r} more often than the line it quotes names it")
    first = _NUMBER.search(text)
    number = int(first.group()) if first else None
    return _Quote(n, start, said.end(), pid, title, number, said.group(1))


def _conclusion(messages: list[dict], quotes: list[_Quote]) -> Fault | None:
    """The steps of the final turn after its last restated fact (all of it if it restates none), against
    those the trace's two restated facts give; a final turn that writes no digit before its answer line
    has no steps (a lookup, an abstention), nor has a trace that restates no quoted fact."""
    n = len(messages) - 1
    content = messages[n].get("content") or "" if messages and messages[n].get("role") == "assistant" else ""
    if final_answer(content) is None or not any(q.restated for q in quotes):
        return None
    last = [q for q in quotes if q.message == n and q.restated]
    start = last[-1].end if last else 0
    while start < len(content) and content[start] == " ":
        start += 1
    written = content[start:]
    if last and written.lstrip("\n").startswith(ANSWER_PREFIX):  # a fact, then the answer: the fact's end
        return _named(n, content, last[-1].restated)
    if not _NUMBER.search(written[: written.rfind(ANSWER_PREFIX)]):
        return None
    facts: dict[str, _Quote] = {}
    for q in quotes:
        if q.restated and q.number is not None:
            if q.pid in facts:  # the same fact quoted again where the steps needed another
                return Fault(
                    q.message, q.start + 1 + len(q.pid), f"quotes {q.pid} a second time"
                )  # at its `]`
            facts[q.pid] = q
    if len(facts) < 2:
        return Fault(n, start, "steps without two facts to take them from")
    a, b = list(facts.values())[:2]
    x, y = a.number, b.number
    big, small = max(x, y), min(x, y)
    expected = [f"{subtraction(big, small)}\n{ANSWER_PREFIX} {big - small}"]
    if x != y:
        for (attribute, pick), _ in ORDER_MEANS.items():
            winner = a.title if (x > y) == (pick == "max") else b.title
            expected.append(f"{decision(x, y, a.title, b.title, attribute, pick)}\n{ANSWER_PREFIX} {winner}")
    agree = max(_common_prefix(written, e) for e in expected)
    if written in expected:
        return None
    return Fault(n, start + agree, f"steps differ from those {x} and {y} give")


def _named(n: int, content: str, stated: str) -> Fault | None:
    """An answer line right after a restated fact names what the fact ends with (`So X is married to Y.`:
    `Y`), as every fact is stated with its object last."""
    answer = final_answer(content)
    expected = " ".join(stated.split()[-len(answer.split()) :]) if answer.split() else ""
    if answer == expected:
        return None
    at = content.rindex(ANSWER_PREFIX) + len(ANSWER_PREFIX) + 1 + _common_prefix(answer, expected)
    return Fault(n, at, f"answers {answer!r} after a fact that ends with {expected!r}")


def _common_prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    return next((i for i in range(n) if a[i] != b[i]), n)
