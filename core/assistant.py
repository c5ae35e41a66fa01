"""The local assistant's session logic, shared by `cogcore chat` and `cogcore serve`: loading a checkpoint
and an index, the text a person reads as it streams, the searches an answer ran and the ids it cited,
and a conversation kept within the model's window.

Any Hugging Face causal LM with a chat template can be loaded. The search tool is offered only to a model
whose template writes tool calls in a format the engine parses (core/toolformats.py: cogcore's, Hermes,
Llama 3 JSON, Mistral; `tool_format=` names it); any other model runs without it, and `notes` says so.
With no index (`index=null`) the tool is still offered (a server's clients may run it themselves) but
finds nothing here.
"""

from __future__ import annotations

import html
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig
from transformers import PreTrainedTokenizerBase

from cogcore.core.checkpoint import load_model
from cogcore.core.engine import Engine
from cogcore.core.generation import GenerationConfig, citable, generate, generation_config
from cogcore.core.io import DataError
from cogcore.core.toolformats import FORMATS, ToolFormat, tool_format
from cogcore.core.tools import SEARCH_TOOL, SYSTEM_PROMPT

Searcher = Callable[[str, int], list[dict]]  # (query, k) -> ranked passages {id, title, text, score}


@dataclass
class Assistant:
    engine: Engine  # engine.tools is [SEARCH_TOOL] when the model writes tool calls, else []
    search: Searcher | None  # None: no index, a search finds nothing
    name: str  # what /v1/models lists: the checkpoint folder's name unless configured
    notes: list[str] = field(default_factory=list)  # what a person should know at startup

    def system(self) -> list[dict]:
        """The opening of a conversation: cogcore's system prompt when the search tool is on."""
        return [{"role": "system", "content": SYSTEM_PROMPT}] if self.engine.tools else []


@dataclass
class Search:
    query: str
    k: int
    passages: list[dict]


@dataclass
class Reply:
    text: str  # what the person read: every assistant turn's text, tool-call markup hidden
    messages: list[dict]  # the turns this answer added (assistant and tool), as trace messages
    searches: list[Search]
    citations: list[str]  # ids of retrieved passages the text cites as `[id]`, in order of citation
    finish: str  # stop | length | tool_calls
    stop: str  # the engine's reason (answer, stopped, context, ...), or loop (cut as it kept repeating)
    prompt_tokens: int
    completion_tokens: int  # tokens the model wrote (tool results not counted)
    tries: int = 1  # answers drawn: more than one when a verified answer was retried (generation.retries)


# The engine's reasons, in the words of an OpenAI `finish_reason`.
FINISH = {
    "answer": "stop",
    "stopped": "stop",
    "max_tool_calls": "stop",
    "tool_calls": "tool_calls",
    "max_new_tokens": "length",
    "context": "length",
}


def special_strings(tokenizer: PreTrainedTokenizerBase) -> list[str]:
    """The strings `tokenizer` turns into one special token wherever they appear in text, longest first."""
    added = [t.content for t in tokenizer.added_tokens_decoder.values() if t.special]
    return sorted(set(added) | set(tokenizer.all_special_tokens), key=len, reverse=True)


def inert(tokenizer: PreTrainedTokenizerBase, text: str) -> str:
    """`text` from a person or a client (a user turn, a tool result) with each special-token string in it
    spelled so that it tokenizes as plain text: `<|end|>` becomes `&lt;|end|&gt;`, as documents are escaped
    (core.tools.escape); one without angle brackets gets a zero-width space after its first character.
    Special tokens then enter a prompt only through the chat template."""
    specials = special_strings(tokenizer)
    while hit := next((t for t in specials if t in text), None):
        spelled = html.escape(hit, quote=False)
        text = text.replace(hit, spelled if spelled != hit else f"{hit[0]}\u200b{hit[1:]}")
    return text


def load_search(index: str, rcfg: DictConfig, collection: str | None) -> tuple[Searcher, str]:
    """A searcher over one collection of the index at `index`, and a line describing it."""
    from cogcore.retrieval.retriever import Retriever

    retriever = Retriever.load(Path(index).expanduser(), rcfg)
    names = list(retriever.collections)
    shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
    if collection is None and len(names) > 1:
        raise DataError(
            f"index={index} holds {len(names)} collections ({shown}); choose one with collection=<name>"
        )
    if collection is not None and collection not in retriever.collections:
        raise DataError(f"collection={collection}: not in index={index}, which holds {shown}")
    name = names[0] if collection is None else collection
    count = len(retriever.collections[name].passages)
    where = f"{index} ({count} passages" + (f" of collection {name})" if len(names) > 1 else ")")
    return (lambda query, k: retriever.search(query, k, name)), where


def load_assistant(cfg: DictConfig) -> Assistant:
    """The checkpoint `model=`, searching `index=` (collection `collection=`) when the model speaks the tool
    format and an index is given."""
    model, tokenizer = load_model(cfg.model, cfg.device, gguf_file=cfg.get("gguf_file"))
    notes, search = [], None
    fmt = tool_format(tokenizer, cfg.get("tool_format"))  # how it writes a call; None: it writes none
    if fmt is None:
        notes.append(
            f"model={cfg.model}: its chat template writes no tool calls in a format cogcore parses "
            f"({', '.join(FORMATS)}), so it runs without the search tool; set tool_format=<format> if it "
            "has one"
        )
    elif cfg.index is None:
        notes.append("index=null: no index, so every search here finds nothing")
    else:
        search, where = load_search(cfg.index, cfg.retriever, cfg.collection)
        notes.append(f"searching {where}")
    name = cfg.model_name or Path(cfg.model).expanduser().resolve().name
    engine = Engine(model, tokenizer, tools=[SEARCH_TOOL] if fmt else [], tool_format=fmt)
    return Assistant(engine, search, name, notes)


def assistant_generation(assistant: Assistant, cfg: DictConfig, **overrides) -> GenerationConfig:
    """The `generation` group's GenerationConfig, `overrides` winning (a request's sampling). An answer's
    length is bounded by TextStream's max_tokens (what the model writes) and the window, so the engine's
    own budget, which also counts tool results, is the whole window: generation.max_new_tokens is not
    used here."""
    return generation_config(cfg.generation, max_new_tokens=assistant.engine.context, **overrides)


class TextStream:
    """One answer's visible text as the model writes it, fed one sampled token at a time: tool-call markup
    is hidden (a call opener still being written is held back), turns are joined by a newline, and each new
    piece goes to `emit`. A `stop` string (held back while it may still be forming, and never shown),
    `max_tokens` written tokens or a set `cancel` event ends the answer: the call returns True and the
    engine stops the row. So does a loop (the same piece of text written over and over, as a small model
    may): `looped` says so. A special token the model writes inside a turn is never shown."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        end_ids: set[int],
        emit: Callable[[str], None] | None = None,
        stop: list[str] | tuple[str, ...] = (),
        max_tokens: int | None = None,
        cancel: threading.Event | None = None,
        fmt: ToolFormat | None = None,
    ):
        self.tokenizer, self.end_ids, self.emit = tokenizer, end_ids, emit
        self.format = fmt or tool_format(tokenizer)  # the engine's (Engine.format): its calls are hidden
        self.stop, self.max_tokens = [s for s in stop if s], max_tokens
        self.cancel = cancel or threading.Event()
        self.text = ""  # emitted so far
        self.finished = ""  # visible text of the finished turns
        self.turn: list[int] = []
        self.tokens = 0
        self.reason: str | None = None  # stop | length, when this stream ended the answer
        self.looped = False  # the answer was cut because it kept repeating itself
        specials = special_strings(tokenizer)  # the strings `inert` spells out of what a client sends
        self.specials = re.compile("|".join(map(re.escape, specials))) if specials else None

    def __call__(self, token: int) -> bool:
        self.tokens += 1
        ended = token in self.end_ids
        if not ended:
            self.turn.append(token)
        current = self._visible(complete=ended)
        full = self.finished + ("\n" if self.finished and current else "") + current
        if ended:
            self.finished, self.turn = full, []
        if self._advance(full):
            return True
        if repeating(full):
            self.reason, self.looped = "stop", True
            return True
        if self.max_tokens is not None and self.tokens >= self.max_tokens:
            self._send(full[len(self.text) :])
            self.reason = "length"
            return True
        return self.cancel.is_set()

    def _visible(self, complete: bool) -> str:
        text = self.tokenizer.decode(self.turn, skip_special_tokens=False)
        # A character whose bytes are not all written yet decodes as U+FFFD: wait for the rest.
        text = text if complete else text.rstrip("\ufffd")
        text = self.format.visible(text, complete) if self.format else text
        return (self.specials.sub("", text) if self.specials else text).lstrip()

    def _advance(self, full: str) -> bool:
        hits = [i for i in (full.find(s, len(self.text)) for s in self.stop) if i >= 0]
        if hits:
            self._send(full[len(self.text) : min(hits)])
            self.reason = "stop"
            return True
        # Hold back the longest tail that could still become a stop string.
        hold = max(
            (n for s in self.stop for n in range(1, len(s)) if full.endswith(s[:n])),
            default=0,
        )
        self._send(full[len(self.text) : len(full) - hold])
        return False

    def _send(self, piece: str) -> None:
        if piece:
            self.text += piece
            if self.emit is not None:
                self.emit(piece)


def repeating(text: str, times: int = 5, span: int = 80, longest: int = 200) -> bool:
    """Whether `text` ends with one piece written at least `times` times in a row, over at least `span`
    characters (a loop such as 'I need the not ofI need the not of...'; a ruled line of dashes is
    shorter)."""
    for period in range(1, min(longest, len(text) // times) + 1):
        piece = text[-period:]
        if text.endswith(piece * max(times, -(-span // period))):
            return True
    return False


def citations(text: str, searches: list[Search]) -> list[str]:
    """Ids of the retrieved passages that `text` cites as `[id]` (how tool results show them), in the
    order the text first cites them."""
    retrieved = {p["id"] for s in searches for p in s.passages}
    found = {pid: text.find(f"[{pid}]") for pid in retrieved}
    return sorted((pid for pid, at in found.items() if at >= 0), key=lambda pid: found[pid])


# admit() -> (conversation, stream) pairs that join a running batch; [] when none is waiting
Joining = Callable[[], list[tuple[list[dict], "TextStream"]]]


def answer(
    assistant: Assistant,
    conversations: list[list[dict]],
    gcfg: GenerationConfig,
    streams: list[TextStream],
    on_search: Callable[[int, Search], None] | None = None,
    admit: Joining | None = None,
    on_reply: Callable[[int, Reply], None] | None = None,
) -> list[Reply]:
    """Answer a batch of conversations in one engine call; `streams[i]` sees row i's tokens as they are
    written, `on_search(i, search)` each search row i runs and `on_reply(i, reply)` its reply.

    With `gcfg.retries` and no stream showing text as it comes (a non-streamed request), the verified
    decoder answers: an answer that fails its checks is drawn again (core.retries), and each stream is fed
    the kept answer's tokens afterwards, so stop strings and max_tokens cut its text the same way. Such
    rows see no token while they run, so a set cancel flag stops them only once they are done.

    Otherwise `admit` may batch continuously: polled once an engine step, the pairs it returns join the
    running batch as rows n, n+1, ..., and each row's reply goes to `on_reply` as soon as it is done."""
    conversations, streams = list(conversations), list(streams)
    searches: list[list[Search]] = [[] for _ in conversations]

    def search(row: int, query: str, k: int) -> list[dict]:
        # Without an index (or the tool) a call finds nothing.
        passages = assistant.search(query, k) if assistant.search else []
        searches[row].append(Search(query, k, passages))
        if on_search is not None:
            on_search(row, searches[row][-1])
        return passages

    replies: dict[int, Reply] = {}

    def done(row: int, out: dict) -> None:
        stream, found = streams[row], searches[row]
        replies[row] = Reply(
            text=stream.text,
            messages=out["messages"][len(conversations[row]) :],
            searches=found,
            citations=citations(stream.text, found),
            finish=stream.reason or FINISH[out["stop"]],
            stop="loop" if stream.looped else out["stop"],
            prompt_tokens=out["prompt_tokens"],
            completion_tokens=sum(out["sampled"]),
            tries=out.get("tries", 1),
        )
        if on_reply is not None:
            on_reply(row, replies[row])

    verified = gcfg.retries > 0 and all(stream.emit is None for stream in streams)
    on_token = None if verified else (lambda row, token: streams[row](token))
    if admit is None or verified:
        outs = generate(assistant.engine, conversations, search, gcfg, on_token=on_token)
        for row, out in enumerate(outs):
            if verified:
                written = out["tokens"][out["prompt_tokens"] :]
                chosen = (token for token, sampled in zip(written, out["sampled"], strict=True) if sampled)
                next((True for token in chosen if streams[row](token)), None)
            done(row, out)
        return [replies[row] for row in range(len(outs))]

    def joining() -> list[list[dict]]:
        pairs = admit()
        for conversation, stream in pairs:
            conversations.append(conversation)
            streams.append(stream)
            searches.append([])
        return [conversation for conversation, _ in pairs]

    # One try per row, as generate() answers without retries; rows that join leave it no batch to retry.
    engine = assistant.engine
    outs = engine.generate(
        conversations[:], search, gcfg, on_token, citable(gcfg), admit=joining, on_done=done
    )
    return [replies[row] for row in range(len(outs))]


def fit_window(engine: Engine, messages: list[dict], budget: int) -> list[dict]:
    """The conversation within `budget` prompt tokens: the oldest exchanges (a user turn and the turns
    answering it) are dropped first; the system turn and the last user turn always stay, the last one cut
    short when it alone is too long."""
    head = messages[:1] if messages and messages[0]["role"] == "system" else []
    body = messages[len(head) :]
    starts = [i for i, m in enumerate(body) if m["role"] == "user"] or [0]
    for start in starts:
        kept = head + body[start:]
        if len(engine.prompt(kept)) <= budget:
            return kept
    *rest, last = kept
    ids = engine.encode(last["content"])
    while True:
        over = len(engine.prompt(rest + [last])) - budget
        if over <= 0:
            return rest + [last]
        if over >= len(ids):
            raise ValueError(
                f"the model's window of {engine.context} tokens leaves {budget} for the conversation, "
                "too few for the system prompt and a question; lower max_tokens"
            )
        ids = ids[: len(ids) - over]
        last = {**last, "content": engine.tokenizer.decode(ids)}


def window_budget(engine: Engine, max_tokens: int) -> int:
    """Prompt tokens a conversation may take: the window minus room for the answer (at most half of it)."""
    return engine.context - min(max_tokens, engine.context // 2)


class Session:
    """A multi-turn conversation with the assistant (`cogcore chat`): the history, kept within the
    model's window, and the last answer."""

    def __init__(self, assistant: Assistant, gcfg: GenerationConfig, max_tokens: int):
        self.assistant, self.gcfg, self.max_tokens = assistant, gcfg, max_tokens
        self.budget = window_budget(assistant.engine, max_tokens)
        fit_window(assistant.engine, assistant.system() + [{"role": "user", "content": ""}], self.budget)
        self.reset()

    def reset(self) -> None:
        self.history: list[dict] = self.assistant.system()
        self.last: Reply | None = None

    def ask(
        self,
        question: str,
        emit: Callable[[str], None] | None = None,
        on_search: Callable[[Search], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> Reply:
        engine = self.assistant.engine
        asked = {"role": "user", "content": inert(engine.tokenizer, question)}
        conversation = fit_window(engine, self.history + [asked], self.budget)
        stream = TextStream(
            engine.tokenizer, engine.end_ids, emit, max_tokens=self.max_tokens, cancel=cancel,
            fmt=engine.format,
        )
        show = None if on_search is None else (lambda _, search: on_search(search))
        (reply,) = answer(self.assistant, [conversation], self.gcfg, [stream], show)
        self.history = conversation + reply.messages
        self.last = reply
        return reply
