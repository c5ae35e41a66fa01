"""Linked support, for corpora whose passages are titled by the entity they are about (the synthetic
worlds): only the passages a trace cites count, and each must link to the question, its title named in
the question or in a passage cited before it. A quote of another person's line (`Pae Tobras`'s spouse for
`Vex Tobras`) is then no support (`linked_grounded`, a verifier of core.retries; `GenerationConfig.linked`),
and retries may cite only passages linked so (`LinkedCitable`, a quote constraint's citable passages).
"""

from __future__ import annotations

import html
import re

from cogcore.core.answers import final, normalize_answer, split_passage, supported
from cogcore.core.constraints import Citable
from cogcore.core.retries import Verdict
from cogcore.core.tools import passage_lines

_CITATION = re.compile(r"^\[([^\]]+)\]")


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


def linked_grounded(messages: list[dict]) -> Verdict:
    """A verifier: the conversation ends with an answer that the passages it cites, each linked to the
    question, support (`linked_citations`)."""
    answer = final(messages)
    return Verdict(answer is not None and supported(answer, messages, linked_citations(messages) or []))


class LinkedCitable(Citable):
    """What a row answering `messages` may cite: the returned passages whose title the question or a
    passage cited before names."""

    def __init__(self, messages: list[dict]):
        super().__init__()
        self.known = asked(messages)  # normalised question and the texts of the passages cited so far
        self.cited: list[str] = []
        self._linked: tuple[tuple[int, int], list[str]] = ((-1, -1), [])  # (its key, the linked lines)

    def lines(self) -> list[str]:
        key = (len(self.returned), len(self.cited))  # what the answer depends on only grows
        if self._linked[0] != key:
            linked = [p for p in self.returned if links(split_passage(html.unescape(p))[1], self.known)]
            self._linked = (key, linked)
        return self._linked[1]

    def cite(self, line: str) -> None:
        if line not in self.cited:
            self.cited.append(line)
            self.known += " " + normalize_answer(split_passage(html.unescape(line))[2])
