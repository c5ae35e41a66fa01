"""The stage between teacher and student: which traces a student may learn from.

A trace is kept only if
  - it is valid (the trace contract of core/trace.py),                                  else `invalid_trace`
  - its final answer matches a gold answer (exact match, or token F1 >= a threshold),   else `wrong_answer`
    (a trace written with the search tool down must abstain: its gold is `unknown`)
  - its answer is supported by a passage the trace retrieved,                          else `unsupported`
  - and it repeats no trace kept before it over the same collection,    else `duplicate` / `near_duplicate`.

Support (`core.answers.supported`): the answer is the fact a trace asserts; it must be held by a passage
the trace retrieved, or be computed from two retrieved numbers. The engine's grounded retries use the
same test.

Duplicates are looked for within one collection (a synthetic world, or the user's corpus): the same
question over two worlds with different facts is two lessons, not one. Exact duplicates have the same
turns after the system prompt; near duplicates have an estimated Jaccard similarity of their word
3-shingles (MinHash LSH, datasketch) at or above `near_duplicate`, over what the teacher and user wrote
(the question, the reasoning, the queries; not the retrieved text, which repeats by nature).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

from datasketch import MinHash, MinHashLSH
from omegaconf import DictConfig

from cogcore.core.answers import exact_match, normalize_answer, supported, token_f1
from cogcore.core.tools import UNKNOWN, final_answer
from cogcore.core.trace import Rejected, trace_errors

MATCHES = ("em", "f1")
NUM_PERM = 128


def _authored_text(messages: list[dict]) -> str:
    parts = []
    for m in messages:
        if m["role"] in ("user", "assistant"):
            parts.append(m["content"] or "")
            parts += [call["function"]["arguments"] for call in m.get("tool_calls") or []]
    return " ".join(parts)


def _minhash(text: str) -> MinHash:
    words = normalize_answer(text).split()
    shingles = {" ".join(words[i : i + 3]) for i in range(max(1, len(words) - 2))}
    signature = MinHash(num_perm=NUM_PERM)
    signature.update_batch([s.encode() for s in shingles])
    return signature


class TraceFilter:
    """`check(trace)` -> None (keep it, and remember it for the duplicate checks) or the Rejected why.
    `kept` are the traces already kept by an earlier, interrupted run, so a resumed run finds the same
    duplicates."""

    def __init__(self, fcfg: DictConfig, kept: Iterable[dict] = ()):
        if fcfg.match not in MATCHES:
            raise ValueError(f"filter.match={fcfg.match!r}: choose one of {', '.join(MATCHES)}")
        self.cfg = fcfg
        self.seen: dict[str, str] = {}  # digest of a kept trace's turns -> its id
        self.near: dict[str | None, MinHashLSH] = {}  # per collection
        for trace in kept:
            self._remember(trace, self._digest(trace), self._signature(trace))

    def check(self, trace: dict) -> Rejected | None:
        messages = trace["messages"]
        errors = trace_errors(trace)
        if errors:
            return Rejected("invalid_trace", "; ".join(errors), messages)
        meta = trace["metadata"]
        answer = final_answer(messages[-1]["content"])
        golds = [UNKNOWN] if meta.get("search") == "unavailable" else meta["answers"]
        if self.cfg.match == "em":
            matched = exact_match(answer, golds) == 1.0
        else:
            matched = token_f1(answer, golds) >= self.cfg.f1
        if not matched:
            return Rejected("wrong_answer", f"answered {answer!r}, gold {golds}", messages)
        if self.cfg.support and not supported(answer, messages):
            return Rejected("unsupported", f"no retrieved passage holds the answer {answer!r}", messages)
        digest = self._digest(trace)
        if digest in self.seen:
            return Rejected("duplicate", f"the same turns as {self.seen[digest]}", messages)
        signature = self._signature(trace)
        if signature is not None:
            similar = self.near.get(meta.get("world"))
            if similar is not None and (hits := similar.query(signature)):
                return Rejected(
                    "near_duplicate",
                    f"nearly the same as {sorted(hits)[0]} (Jaccard >= {self.cfg.near_duplicate})",
                    messages,
                )
        self._remember(trace, digest, signature)
        return None

    def _digest(self, trace: dict) -> str:
        turns = [m for m in trace["messages"] if m["role"] != "system"]
        key = json.dumps([trace["metadata"].get("world"), turns], sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(key.encode()).hexdigest()

    def _signature(self, trace: dict) -> MinHash | None:
        return None if self.cfg.near_duplicate is None else _minhash(_authored_text(trace["messages"]))

    def _remember(self, trace: dict, digest: str, signature: MinHash | None) -> None:
        self.seen[digest] = trace["id"]
        if signature is not None:
            world = trace["metadata"].get("world")
            if world not in self.near:
                first = next(iter(self.near.values()), None)
                # Bands and rows come from a numerical optimisation (25 ms): done once, then reused.
                params = None if first is None else (first.b, first.r)
                self.near[world] = MinHashLSH(self.cfg.near_duplicate, NUM_PERM, params=params)
            self.near[world].insert(trace["id"], signature)
