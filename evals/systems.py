"""The systems the leaderboard compares, all answering the same questions through one interface:

    system.answer(questions, search, done) -> one trace per question (messages, "stop", "tries" and, where
                                             a retry was kept, the "first" try)

where `done(traces)` is told of each batch of answers as it is finished (the eval's progress bar), and
`search(row, query, k)` is the suite's search function (core/engine.py's SearchFn): it returns
passages, or raises SearchUnavailable in the closed-book suite. A system that cannot search gets
`search.gold(row)`, the question's gold passages, in its prompt in the reasoning suite (DESIGN, R).

- `ToolUser`: any HF causal LM that speaks cogcore's tool protocol (the distilled student, or a
  checkpoint by path), through the tool-loop engine.
- `Oracle`: the oracle teacher, the ceiling: it knows which fact each hop needs, but states it only
  once a search returned it; with the tool down it abstains.
- `RetrieveThenRead`: a tool-using model given the top-k passages for the question itself as an
  already-answered first search, and no further searches (one shot, no multi-step search).
- `ClosedBook`: a model with no tool (the closed-book baseline), asked the question with its world
  named, since the same name means different facts in different worlds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from cogcore.core.engine import Engine, SearchFn
from cogcore.core.generation import GenerationConfig, generate
from cogcore.core.tools import UNAVAILABLE, SearchUnavailable, render_results, search_call
from cogcore.core.trace import Rejected
from cogcore.distill.teachers import conversation
from cogcore.distill.teachers.oracle import oracle_trace

CLOSED_BOOK_PROMPT = "Answer the question from memory. End with a line 'Answer: <answer>'."


def closed_book_question(question: dict) -> str:
    """The closed-book prompt of a question: its world named, as the tool users' searches name it."""
    return (
        f"In world {question['world']}: {question['question']}"
        if "world" in question
        else question["question"]
    )


Done = Callable[[list[dict]], None]


def _generate(
    engine: Engine, conversations: list[list[dict]], search, gen: GenerationConfig, batch: int, done: Done
):
    keep = ("messages", "stop", "tries", "first")  # "first": the first try, where a retry was kept
    out = []
    for start in range(0, len(conversations), batch):
        rows = conversations[start : start + batch]
        got = generate(engine, rows, lambda i, query, k, start=start: search(start + i, query, k), gen)
        out += [{k: r[k] for k in keep if k in r} for r in got]
        done(out[start:])
    return out


@dataclass
class ToolUser:
    name: str
    engine: Engine
    gen: GenerationConfig
    batch: int = 32
    params: int | None = None
    searches: bool = True

    def answer(self, questions: list[dict], search: SearchFn, done: Done = lambda traces: None) -> list[dict]:
        conversations = [conversation(q) for q in questions]
        return _generate(self.engine, conversations, search, self.gen, self.batch, done)


@dataclass
class RetrieveThenRead(ToolUser):
    k: int = 3

    def answer(self, questions: list[dict], search: SearchFn, done: Done = lambda traces: None) -> list[dict]:
        conversations = []
        for row, q in enumerate(questions):
            call = search_call("call_0", q["question"], self.k)
            try:
                results = render_results(search(row, q["question"], self.k))
            except SearchUnavailable:
                results = UNAVAILABLE
            conversations.append(
                conversation(q)
                + [
                    {"role": "assistant", "content": "", "tool_calls": [call]},
                    {"role": "tool", "tool_call_id": "call_0", "name": "search", "content": results},
                ]
            )
        # max_tool_calls=0: a further search is answered "limit reached", a second one ends the answer;
        # retries=0: one answer, however grounded (a retry would be a second shot).
        one_shot = replace(self.gen, max_tool_calls=0, retries=0)
        return _generate(self.engine, conversations, search, one_shot, self.batch, done)


@dataclass
class ClosedBook(ToolUser):
    searches: bool = False

    def answer(self, questions: list[dict], search: SearchFn, done: Done = lambda traces: None) -> list[dict]:
        conversations = []
        for row, q in enumerate(questions):
            user = closed_book_question(q)
            if gold := getattr(search, "gold", None):  # the reasoning suite: the facts in the prompt
                user = f"{render_results(gold(row))}\n{user}"
            conversations.append(
                [{"role": "system", "content": CLOSED_BOOK_PROMPT}, {"role": "user", "content": user}]
            )
        # No tool, so no search results to ground an answer in: nothing to retry for.
        return _generate(self.engine, conversations, search, replace(self.gen, retries=0), self.batch, done)


@dataclass
class Oracle:
    name: str = "oracle"
    k: int = 3
    reformulations: int = 2
    params: int | None = None
    searches: bool = True
    quote: bool = True
    near_misses: bool = False

    def answer(self, questions: list[dict], search: SearchFn, done: Done = lambda traces: None) -> list[dict]:
        out = []
        for row, q in enumerate(questions):
            out.append(self._one(row, q, search))
            done(out[-1:])
        return out

    def _one(self, row: int, question: dict, search: SearchFn) -> dict:
        gen = oracle_trace(
            question, self.k, self.reformulations, quote=self.quote, near_misses=self.near_misses
        )
        passages = None
        try:
            while True:
                query, k = gen.send(passages)
                try:
                    passages = search(row, query, k)
                except SearchUnavailable:  # the tool is down: the oracle's offline trace abstains
                    return {"messages": self._offline(question)["messages"], "stop": "answer"}
        except StopIteration as done:
            return {"messages": done.value["messages"], "stop": "answer"}
        except Rejected as e:  # no phrasing found a needed passage: the oracle gives up, unanswered
            return {"messages": e.messages, "stop": e.reason}

    def _offline(self, question: dict) -> dict:
        try:
            next(oracle_trace(question, self.k, self.reformulations, quote=self.quote, offline=True))
        except StopIteration as done:  # an offline trace returns before any search
            return done.value
