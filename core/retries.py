"""Retries around the tool loop: an answer that fails one of the caller's verifiers is drawn again.

A verifier reads a finished conversation (nothing but the row's own trace, never a gold answer, so it is
the same in evals and in use) and returns a `Verdict`: whether the answer passes, and, when it shows,
where it went wrong (a `Fault`: the message and character). The first verifier is the one that matters
most: of answers that fail some verifier, one that passes the first is kept over one that does not.

Retries are drawn one of two ways (`GenerationConfig.retry_temperature`):
- > 0: each from the start, sampled at that temperature;
- 0, branching: each greedy, but taking another token at one of the first answer's least sure choices
  (its doubts, recorded by the engine), the n-th retry at the n-th: a search over the model's own doubts
  rather than a fresh draw, which repeats a confident slip (BENCHMARKS.md, "Retries that branch"). Where
  it is known where the answer went wrong (`locate`: a verifier's fault, or a loop in an answer cut off
  at max_new_tokens), its retries branch first at that token and just before it, and a retry that goes
  wrong later than the answer it branched from is followed on from its own fault.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from cogcore.core.engine import CitableFn, Doubt, Engine, SearchFn, TokenFn
    from cogcore.core.generation import GenerationConfig

_WINDOW = 16  # choices before a fault whose doubts its retries branch at
_LOOP = re.compile(r"(.{2,20}?)\1{3,}", re.DOTALL)  # a piece of text written four times in a row


@dataclass(frozen=True)
class Fault:
    """Where an answer first goes wrong: its `message`-th message (an assistant turn), at character
    `offset` of that message's content, and why."""

    message: int
    offset: int
    why: str


class Verdict(NamedTuple):
    passed: bool
    fault: Fault | None = None  # where it went wrong, when that shows


# verifier(messages) -> Verdict of the conversation's final answer
Verifier = Callable[[list[dict]], Verdict]
# A branch: (choice index, token taken there instead of the model's own)
Branch = tuple[int, int]
# Where an answer went wrong: (its assistant turn, character of that turn's decoded tokens)
Mark = tuple[int, int]


@dataclass
class Repair:
    """A row's branching retries: the branches still to try, each taken on top of the `kept` ones (those of
    a retry that went wrong later than the answer it branched from), and where the answer they follow
    went wrong, if that shows."""

    plan: list[Branch]
    kept: dict[int, int]
    mark: Mark | None

    def take(self) -> dict[int, int]:
        return {**self.kept, **dict([self.plan.pop(0)])}


def answer(
    engine: Engine,
    conversations: list[list[dict]],
    search: SearchFn,
    cfg: GenerationConfig,
    verifiers: list[Verifier],
    citable: Callable[[GenerationConfig], CitableFn | None],
    locate: bool = False,
    on_token: TokenFn | None = None,
) -> list[dict]:
    """Answer each conversation with the engine and retry, up to `cfg.retries` times, each answer that
    fails a verifier (never a streamed one: it has been shown already, nor with `run_tools=False`). Keeps
    the first answer that passes every verifier, else the first that passes the first one, else the first
    one. `citable(cfg)`: the quote constraint for a try generated with `cfg` (retries may narrow it).
    Per row: the engine's output (less its doubts and turns) plus "tries", and "first" ({"messages",
    "stop"} of the first try) where the answer kept is a retry: the first try is exactly the answer
    generated without retries (evals score it as T@1)."""
    branching = cfg.retry_temperature <= 0
    retry = on_token is None and cfg.run_tools and cfg.retries > 0
    out = engine.generate(
        conversations,
        search,
        cfg,
        on_token,
        citable=citable(cfg),
        doubts=retry and branching and cfg.temperature <= 0,
    )
    tries = [1] * len(out)
    first = list(out)
    verdicts = {i: _judge(verifiers, r["messages"]) for i, r in enumerate(out)} if retry else {}
    pending = [i for i, v in verdicts.items() if not all(x.passed for x in v)]
    backed = {i: verdicts[i][0].passed for i in pending}  # whether the answer kept so far passes the first
    repairs = (
        {i: _repair(engine, conversations[i], out[i], verdicts[i], {}, locate) for i in pending}
        if branching
        else {}
    )
    again_cfg = replace(cfg, temperature=cfg.retry_temperature, linked_quotes=cfg.linked)
    for attempt in range(1, cfg.retries + 1):
        if branching:  # each row takes the next branch of its plan; none left: done
            pending = [i for i in pending if repairs[i].plan]
        if not pending:
            break
        tried = replace(again_cfg, seed=cfg.seed + attempt)
        prescribed = [repairs[i].take() for i in pending] if branching else None
        again = engine.generate(
            [conversations[i] for i in pending],
            lambda j, query, k, rows=pending: search(rows[j], query, k),
            tried,
            citable=citable(tried),
            prescribed=prescribed,
            doubts=branching,
        )
        still = []
        for n, (i, r) in enumerate(zip(pending, again, strict=True)):
            tries[i] += 1
            verdict = _judge(verifiers, r["messages"])
            if all(v.passed for v in verdict):
                out[i] = r
                continue
            still.append(i)
            if verdict[0].passed and not backed[i]:
                out[i], backed[i] = r, True
            if branching:  # a retry that goes wrong later than its plan's: follow it from there
                further = _repair(engine, conversations[i], r, verdict, prescribed[n], locate)
                if None not in (repairs[i].mark, further.mark) and further.mark > repairs[i].mark:
                    repairs[i] = further
        pending = still
    for r in {id(r): r for r in first + out}.values():
        del r["doubts"], r["turns"]
    return [
        r | {"tries": n} | ({} if r is f else {"first": {"messages": f["messages"], "stop": f["stop"]}})
        for r, n, f in zip(out, tries, first, strict=True)
    ]


def _judge(verifiers: list[Verifier], messages: list[dict]) -> list[Verdict]:
    return [verify(messages) for verify in verifiers]


def _repair(
    engine: Engine, conversation: list[dict], out: dict, verdict: list[Verdict], kept: dict, locate: bool
) -> Repair:
    """The branching retries of an answer generated with the branches `kept`, from where it went wrong if
    `locate` and that shows: new branches come after the kept ones."""
    fault = next((v.fault for v in verdict if v.fault is not None), None)
    wrong = _wrong(engine, conversation, out, fault) if locate else None
    after = max(kept, default=-1)
    plan = [b for b in _branches(engine, out, wrong) if b[0] > after]
    return Repair(plan, kept, wrong)


def _wrong(engine: Engine, conversation: list[dict], out: dict, fault: Fault | None) -> Mark | None:
    """Where an answer first went wrong: a verifier's `fault`, or, in an answer cut off at
    max_new_tokens, where its last turn begins to repeat itself (a query copied into a loop,
    `SofokSofokSofok...`)."""
    decode = engine.tokenizer.decode
    if fault is not None:
        turn = sum(m["role"] == "assistant" for m in out["messages"][len(conversation) : fault.message])
        if turn >= len(out["turns"]):
            return None
        text = decode(out["turns"][turn], skip_special_tokens=False)
        return turn, fault.offset + len(text) - len(text.lstrip())  # the turn's content is stripped
    if out["stop"] == "max_new_tokens" and out["turns"]:
        loop = _LOOP.search(decode(out["turns"][-1], skip_special_tokens=False))
        if loop is not None:  # wrong where the repeating began: at the first repeat
            return len(out["turns"]) - 1, loop.start() + len(loop.group(1))
    return None


def _branches(engine: Engine, out: dict, wrong: Mark | None) -> list[Branch]:
    """Where an answer's branching retries branch, in order. Its least sure choices first, unless it is
    known where it went `wrong`: then the runner-up at that token, the runners-up at the `_WINDOW`
    choices before it (least sure first), then that token's next likeliest."""
    doubts: list[Doubt] = out["doubts"]
    least = [(d.choice, d.others[0]) for d in sorted(doubts)]
    if wrong is None:
        return least
    turn, at = wrong
    tokens = out["turns"][turn]

    def start(index: int) -> int:
        return len(engine.tokenizer.decode(tokens[:index], skip_special_tokens=False))

    last = bisect_right(range(len(tokens) + 1), at, key=start) - 1  # the last token starting by `at`
    before = [d for d in doubts if d.turn == turn and d.index <= last]
    if not before:
        return least
    here = max(before, key=lambda d: d.index)
    near = sorted(d for d in before if d is not here and here.index - d.index <= _WINDOW)
    first = [(here.choice, here.others[0])] + [(d.choice, d.others[0]) for d in near]
    first += [(here.choice, t) for t in here.others[1:]]
    return first + [b for b in least if b not in first]
