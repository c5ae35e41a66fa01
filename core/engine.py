"""The tool-loop engine: batched generation that stops at a `search` call, runs it, injects the rendered
result as forced tokens and continues from the KV cache without re-encoding the prefix.

Every row advances exactly one token per step: the next of its forced tokens (a tool turn and the next
assistant header) if it has any, else a sampled one. So rows at different steps of their own
conversations share one batch and one cache (rows that finished leave it, so a batch does not run at
full width until its longest answer ends), and `sampled` records which tokens the model chose. A turn
ends at an end-of-turn token; if it holds a tool call, the call runs and the tool turn is injected,
otherwise the row is finished. A malformed call is answered in the tool turn with what is wrong, never
a crash, and a bound on calls per answer keeps a looping model finite.

Quotes are verbatim (`quotes`, on by default): a line that begins with `[` cites a passage a search
returned to this row. Each next token is the model's likeliest one that keeps the line a prefix of such a
passage's rendered line, `[id]` included, until the line is whole. The model still chooses which passage
to quote and what to make of it; it cannot misquote one (a one-token slip inside a quote used to send a
small student on along another line's text: BENCHMARKS.md, "Verbatim quotes"). If the model's own choice
inside the `[id]` leaves every passage it may cite (a made-up id such as `[w680-p2-spouse]` when no
spouse line came back), the line is taken back: its tokens are masked out of the cache, and the line
starts again from the model's likeliest first token that begins no citation (a streamed line, already
shown, is held to a citable id instead). With `linked_quotes` (the retries of `linked`), a passage is
citable only once its title is named in the question or in a passage cited before (core.answers).

An optional `on_token` callback sees each sampled token as it is chosen (the assistant streams from it)
and can end a row early (a stop string, a client that went away, Ctrl-C); with `run_tools=False` a turn
with calls ends the row instead, for a caller that runs the calls itself.

What comes back is, per row, the conversation as trace messages (the trace contract of core/trace.py)
plus counts; the callers (evals, the assistant, HF teachers) add the metadata.
"""

from __future__ import annotations

import html
import json
import re
from bisect import bisect_right
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
from transformers import DynamicCache, PreTrainedTokenizerBase
from transformers.cache_utils import DynamicLayer

from cogcore.core.answers import asked, links, normalize_answer, split_passage, supported
from cogcore.core.chat import CALL, END_CALL, chat_messages
from cogcore.core.generation import GenerationConfig
from cogcore.core.tools import (
    SEARCH,
    SEARCH_TOOL,
    UNAVAILABLE,
    SearchUnavailable,
    ToolCallError,
    final_answer,
    parse_search_call,
    passage_lines,
    render_results,
)
from cogcore.core.worlds.steps import Fault, fault

# search(row, query, k) -> ranked passages; the row index lets each row search its own collection.
SearchFn = Callable[[int, str, int], list[dict]]
# on_token(row, token) sees each sampled token as it is chosen (streaming); returning True ends the row
# there (stop="stopped"): a stop string, a token budget, a client that went away, Ctrl-C.
TokenFn = Callable[[int, int], bool]

CALL_LIMIT = "Tool call limit reached: answer with what you have."
_ALTERNATIVES = 3  # tokens a branching retry may take at a choice, besides the model's own
_WINDOW = 16  # choices before a fault whose doubts its retries branch at
_LOOP = re.compile(r"(.{2,20}?)\1{3,}", re.DOTALL)  # a piece of text written four times in a row
_UNLIKELY = 1e-3  # a token the model gives less probability than this is no branch: a retry would waste a try
_CALL_RE = re.compile(re.escape(CALL) + r"(.*?)" + re.escape(END_CALL), re.DOTALL)


@dataclass
class Row:
    messages: list[dict]
    cached: list[int]  # every token in the KV cache for this row, prompt included
    prompt: int = 0  # how many of them are the prompt
    forced: deque = field(default_factory=deque)
    turn: list[int] = field(default_factory=list)  # sampled tokens of the current assistant turn
    sampled: list[bool] = field(default_factory=list)  # per generated token: sampled (True) or forced
    calls: int = 0
    passages: list[str] = field(default_factory=list)  # the `[id] title: text` lines searches returned
    line: list[int] = field(default_factory=list)  # sampled tokens since the last line break
    free: bool = False  # this line is no quote (or its quote is whole): nothing left to hold it to
    start: torch.Tensor | None = None  # the logits the current line's first token was chosen from
    citing: bool = False  # the line is still writing the `[id]` of a citation
    known: str = ""  # normalised question and the texts of the passages cited so far (`linked_quotes`)
    cited: list[str] = field(default_factory=list)  # the passage lines cited so far (`linked_quotes`)
    citable: tuple = ((-1, -1), [])  # (len(passages), len(cited)) and the passages citable then
    chosen: int = 0  # tokens the model chose so far (forced ones not counted): the index of its next choice
    doubts: list[tuple] = field(default_factory=list)  # (p1 - p2, choice index, the next likeliest tokens,
    # turn, index in the turn) of each choice that was the model's own greedy pick in a first answer: where
    # branching retries branch
    turns: list[list[int]] = field(default_factory=list)  # the tokens of each finished assistant turn
    prescribed: dict[int, int] = field(default_factory=dict)  # choice index -> token taken there instead
    done: bool = False
    stop: str = ""  # answer | max_new_tokens | max_tool_calls | context | stopped | tool_calls


@dataclass
class _Repair:
    """A row's branching retries: the branches still to try, each taken on top of the `kept` ones (those of
    a retry that went wrong later than the answer it branched from), and where the answer they follow
    went wrong (`Engine._wrong`: assistant turn, character), if that shows."""

    plan: list[tuple[int, int]]
    kept: dict[int, int]
    mark: tuple[int, int] | None

    def take(self) -> dict[int, int]:
        return {**self.kept, **dict([self.plan.pop(0)])}


class _GrowingLayer(DynamicLayer):
    """A DynamicLayer that appends in place, into spare capacity that doubles when it runs out, instead of
    copying the whole cache with `torch.cat` at every step (79% of a 64-row generation step on CPU before;
    BENCHMARKS.md, "The engine"). `keys`/`values` are views of the filled part, so attention sees exactly
    what a DynamicLayer would hold."""

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
            self._buffers = None
        n = self.get_seq_length()
        m = n + key_states.shape[-2]
        if self._buffers is None or m > self._buffers[0].shape[-2]:
            capacity = max(m, 2 * n, 64)
            grown = []
            for old, new in ((self.keys, key_states), (self.values, value_states)):
                buffer = new.new_empty((*new.shape[:-2], capacity, new.shape[-1]))
                if n:
                    buffer[..., :n, :] = old
                grown.append(buffer)
            self._buffers = grown
        keys, values = self._buffers
        keys[..., n:m, :] = key_states
        values[..., n:m, :] = value_states
        self.keys, self.values = keys[..., :m, :], values[..., :m, :]
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if m := self.get_seq_length():
            self._buffers = [b[indices, ...] for b in self._buffers]
            self.keys, self.values = (b[..., :m, :] for b in self._buffers)


def _growing_cache(model) -> DynamicCache:
    """The model's DynamicCache, its full-attention layers growing in place (sliding-window and other layer
    kinds a checkpoint's config asks for are kept as transformers builds them)."""
    cache = DynamicCache(config=model.config)
    cache.layers = [_GrowingLayer() if type(layer) is DynamicLayer else layer for layer in cache.layers]
    if cache.layer_class_to_replicate is DynamicLayer:
        cache.layer_class_to_replicate = _GrowingLayer
    return cache


def parse_turn(text: str) -> tuple[str, list[dict]]:
    """Split a generated assistant turn of cogcore's chat format into its text and its tool calls."""
    calls = [
        {"id": "", "type": "function", "function": {"name": SEARCH, "arguments": m.group(1).strip()}}
        for m in _CALL_RE.finditer(text)
    ]
    content = _CALL_RE.sub("", text)
    if CALL in content:  # an opened call the model never closed: still a (malformed) call
        content, _, rest = content.partition(CALL)
        calls.append({"id": "", "type": "function", "function": {"name": SEARCH, "arguments": rest.strip()}})
    return content.strip(), calls


def _render(tokenizer: PreTrainedTokenizerBase, messages: list[dict], tools: list[dict], prompt: bool) -> str:
    return tokenizer.apply_chat_template(
        chat_messages(tokenizer, messages), tools=tools, tokenize=False, add_generation_prompt=prompt
    )


class Engine:
    def __init__(self, model, tokenizer: PreTrainedTokenizerBase, tools: list[dict] | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.tools = tools if tools is not None else [SEARCH_TOOL]
        # A chat model may end its turn with any of its generation config's eos ids (<|eot_id|>, ...).
        eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        self.end_ids = {tokenizer.eos_token_id, *(eos if isinstance(eos, list) else [eos])} - {None}
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.context = getattr(model.config, "max_position_embeddings", 1 << 30)
        self._pieces: list[str] | None = None  # each token id's text, built when a search first returns
        self._brackets: torch.Tensor | None = None  # which token ids begin with `[`

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def prompt(self, messages: list[dict]) -> list[int]:
        """The token ids a conversation is prefilled with (its length is what must fit the window)."""
        return self.encode(_render(self.tokenizer, messages, self.tools, prompt=True))

    def generate(
        self,
        conversations: list[list[dict]],
        search: SearchFn,
        cfg: GenerationConfig,
        on_token: TokenFn | None = None,
    ) -> list[dict]:
        """Answer each conversation (messages ending with a user turn); return, per row, {"messages",
        "tokens" (prompt and generated ids), "prompt_tokens", "sampled" (per generated token: chosen by the
        model, or forced), "tool_calls", "stop" (answer | max_new_tokens | max_tool_calls | context |
        stopped | tool_calls), "tries"}.

        With `cfg.retries`, a row whose answer its own search results do not support (or that ended
        without one) is answered again from the start: sampled at `cfg.retry_temperature`, or, at 0,
        greedily with the runner-up token taken at its first answer's n-th least sure choice on the n-th
        retry. With `cfg.steps` an answer whose written steps its own quotes contradict
        (core.worlds.steps.fault) is retried too, its branches taken first at the fault and just
        before it, and a retry that goes wrong later than that is followed on from its own fault. It
        keeps the first answer that passes, else the first supported one, else its first one. The
        tests look at nothing but the row's trace (core.answers.supported), so they are the same in
        evals and in use. With `cfg.linked` support is linked support, and the retries may cite only
        passages linked to the question."""
        out = self._generate(conversations, search, cfg, on_token)
        tries = [1] * len(out)
        retry = on_token is None and cfg.run_tools  # a streamed answer has been shown already
        verdicts = [_verdict(r["messages"], cfg) for r in out] if retry else []
        pending = [i for i, (held, found) in enumerate(verdicts) if not held or found is not None]
        backed = {i: verdicts[i][0] for i in pending}  # whether the answer kept so far is supported
        branching = cfg.retry_temperature <= 0
        repairs = (
            {i: self._repair(conversations[i], out[i], cfg, verdicts[i][1], {}) for i in pending}
            if branching
            else {}
        )
        for r in out:
            del r["doubts"], r["turns"]
        for attempt in range(1, cfg.retries + 1):
            if branching:  # each row takes the next branch of its plan; none left: done
                pending = [i for i in pending if repairs[i].plan]
            if not pending:
                break
            sampled = replace(
                cfg, temperature=cfg.retry_temperature, seed=cfg.seed + attempt, linked_quotes=cfg.linked
            )
            prescribed = [repairs[i].take() for i in pending] if branching else None
            again = self._generate(
                [conversations[i] for i in pending],
                lambda j, query, k, rows=pending: search(rows[j], query, k),
                sampled,
                prescribed=prescribed,
            )
            still = []
            for n, (i, r) in enumerate(zip(pending, again, strict=True)):
                tries[i] += 1
                held, found = _verdict(r["messages"], cfg)
                if held and found is None:
                    out[i] = r
                else:
                    still.append(i)
                    if held and not backed[i]:  # faulty steps, but supported
                        out[i], backed[i] = r, True
                    if branching:  # a retry whose steps go wrong later than its plan's: follow it from there
                        further = self._repair(conversations[i], r, cfg, found, prescribed[n])
                        if None not in (repairs[i].mark, further.mark) and further.mark > repairs[i].mark:
                            repairs[i] = further
                del r["doubts"], r["turns"]
            pending = still
        return [r | {"tries": n} for r, n in zip(out, tries, strict=True)]

    def _repair(
        self, conversation: list[dict], out: dict, cfg: GenerationConfig, found: Fault | None, kept: dict
    ) -> _Repair:
        """The branching retries of an answer generated with the branches `kept` (with `cfg.steps`, from
        where it went wrong if that shows: its steps' fault `found`, or a loop): new branches come after
        the kept ones."""
        wrong = self._wrong(conversation, out, found) if cfg.steps else None
        after = max(kept, default=-1)
        plan = [b for b in self._branches(out, wrong) if b[0] > after]
        return _Repair(plan, kept, wrong)

    def _wrong(self, conversation: list[dict], out: dict, found: Fault | None) -> tuple[int, int] | None:
        """Where an answer first went wrong, as (its assistant turn, character of that turn's decoded
        tokens): its steps' fault `found` (core.worlds.steps.fault), or, in an answer cut off at
        `max_new_tokens`, where its last turn begins to repeat itself (a query copied into a loop,
        `SofokSofokSofok...`)."""
        if found is not None:
            turn = sum(m["role"] == "assistant" for m in out["messages"][len(conversation) : found.message])
            if turn >= len(out["turns"]):
                return None
            text = self.tokenizer.decode(out["turns"][turn], skip_special_tokens=False)
            return turn, found.offset + len(text) - len(text.lstrip())  # the turn's content is stripped
        if out["stop"] == "max_new_tokens" and out["turns"]:
            loop = _LOOP.search(self.tokenizer.decode(out["turns"][-1], skip_special_tokens=False))
            if loop is not None:  # wrong where the repeating began: at the first repeat
                return len(out["turns"]) - 1, loop.start() + len(loop.group(1))
        return None

    def _branches(self, out: dict, wrong: tuple[int, int] | None) -> list[tuple[int, int]]:
        """Where an answer's branching retries branch, in order: (choice index, token taken there). Its
        least sure choices first, unless it is known where it went `wrong`: then the runner-up at that
        token, the runners-up at the `_WINDOW` choices before it (least sure first), then that token's
        next likeliest."""
        doubts = out["doubts"]
        least = [(choice, others[0]) for _, choice, others, _, _ in sorted(doubts)]
        if wrong is None:
            return least
        turn, at = wrong
        tokens = out["turns"][turn]

        def start(index: int) -> int:
            return len(self.tokenizer.decode(tokens[:index], skip_special_tokens=False))

        last = bisect_right(range(len(tokens) + 1), at, key=start) - 1  # the last token starting by `at`
        before = [d for d in doubts if d[3] == turn and d[4] <= last]
        if not before:
            return least
        here = max(before, key=lambda d: d[4])
        near = sorted(d for d in before if d is not here and here[4] - d[4] <= _WINDOW)
        first = (
            [(here[1], here[2][0])] + [(d[1], d[2][0]) for d in near] + [(here[1], t) for t in here[2][1:]]
        )
        return first + [b for b in least if b not in first]

    @torch.no_grad()
    def _generate(
        self,
        conversations: list[list[dict]],
        search: SearchFn,
        cfg: GenerationConfig,
        on_token: TokenFn | None = None,
        prescribed: list[dict[int, int]] | None = None,
    ) -> list[dict]:
        """`prescribed`: per row, tokens taken instead of the model's choice at those choice indices (a
        branching retry). A greedy answer that branching retries may follow records its doubts."""
        doubting = cfg.temperature <= 0 and cfg.retries > 0 and cfg.retry_temperature <= 0
        rows = []
        for n, messages in enumerate(conversations):
            ids = self.prompt(messages)
            rows.append(
                Row(
                    [dict(m) for m in messages],
                    ids,
                    len(ids),
                    known=asked(messages),
                    prescribed=prescribed[n] if prescribed else {},
                )
            )
            for m in messages:
                if m.get("role") == "tool":
                    rows[-1].passages.extend(passage_lines(m.get("content")))
        device = next(self.model.parameters()).device
        generator = torch.Generator(device="cpu").manual_seed(cfg.seed)

        # Prefill: left-pad the prompts so that every row's next token sits in the last column.
        width = max(len(r.cached) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            input_ids[i, width - len(r.cached) :] = torch.tensor(r.cached)
            attention[i, width - len(r.cached) :] = 1
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        cache = _growing_cache(self.model)
        out = self.model(
            input_ids=input_ids.to(device),
            attention_mask=attention.to(device),
            position_ids=positions.to(device),
            past_key_values=cache,
            use_cache=True,
        )
        logits = out.logits[:, -1, :].float().cpu()

        batch = list(range(len(rows)))  # the rows still in the batch tensors (finished ones leave it)
        while True:
            step = torch.full((len(batch), 1), self.pad_id, dtype=torch.long)
            live = torch.zeros((len(batch), 1), dtype=torch.long)
            choices = self._sample(logits, cfg, generator)
            probs = logits.softmax(-1) if doubting else None
            top = probs.topk(1 + _ALTERNATIVES, dim=-1) if doubting else None
            for j, i in enumerate(batch):
                r = rows[i]
                if r.done:
                    continue
                forced = bool(r.forced)
                if forced:
                    token = r.forced.popleft()
                else:
                    start = cfg.quotes and bool(r.passages) and self._at_line_start(r)
                    quoted = self._quoted(r, cfg) if cfg.quotes else None
                    token = r.prescribed.get(r.chosen, int(choices[j]))
                    # a doubt is a free greedy choice: a held quote's token is the quote's, whatever is chosen
                    own = doubting and not quoted
                    cannot = quoted is not None and r.citing and not self._fits(token, quoted)
                    if cannot and r.start is not None:
                        # The line began citing a passage it may not: write it again without a citation.
                        taken = self._take_back_line(r)
                        attention[j, attention.shape[1] - taken :] = 0
                        token, r.start = self._uncited(r.start, cfg, generator), None
                    elif quoted:
                        token = self._quote(quoted, logits[j], cfg, generator, r.prescribed.get(r.chosen))
                        if doubting and r.citing:
                            self._doubt_citation(r, token, quoted, probs[j])
                    elif quoted is not None:
                        r.free = True  # nothing it may cite, and the line cannot be taken back
                    if start:  # a streamed line cannot be taken back
                        r.start = logits[j].clone() if on_token is None else None
                    if own and token == int(top.indices[j, 0]):  # the model's own pick, as it is kept
                        gap = float(top.values[j, 0] - top.values[j, 1])
                        alternatives = zip(
                            top.values[j, 1:].tolist(), top.indices[j, 1:].tolist(), strict=True
                        )
                        others = tuple(v for p, v in alternatives if p >= _UNLIKELY)
                        if others:
                            r.doubts.append((gap, r.chosen, others, len(r.turns), len(r.turn)))
                    r.chosen += 1
                step[j, 0], live[j, 0] = token, 1
                r.cached.append(token)
                r.sampled.append(not forced)
                if not forced:
                    r.turn.append(token)
                    if cfg.quotes and r.passages:  # lines are followed only where there is one to quote
                        r.line.append(token)
                        if "\n" in self._piece(token):
                            r.line, r.free, r.citing = [token], False, False
                    if on_token is not None and on_token(i, token):
                        self._finish(r, "stopped")
                    elif token in self.end_ids:
                        self._end_turn(i, r, search, cfg)
                if not r.done and len(r.sampled) >= cfg.max_new_tokens:
                    self._finish(r, "max_new_tokens")
                if not r.done and len(r.cached) + len(r.forced) >= self.context:
                    self._finish(r, "context")
            keep = [j for j, i in enumerate(batch) if not rows[i].done]
            if not keep:
                break
            if len(batch) - len(keep) >= max(1, len(batch) // 8):  # drop finished rows from the batch
                index = torch.tensor(keep)
                cache.batch_select_indices(index.to(device))
                attention, step, live = attention[index], step[index], live[index]
                batch = [batch[j] for j in keep]
            attention = torch.cat([attention, live], dim=1)
            positions = torch.tensor([[len(rows[i].cached) - 1] for i in batch])
            out = self.model(
                input_ids=step.to(device),
                attention_mask=attention.to(device),
                position_ids=positions.to(device),
                past_key_values=cache,
                use_cache=True,
            )
            logits = out.logits[:, -1, :].float().cpu()
        return [
            {
                "messages": r.messages,
                "tokens": r.cached,
                "prompt_tokens": r.prompt,
                "sampled": r.sampled,
                "tool_calls": r.calls,
                "stop": r.stop,
                "doubts": r.doubts,
                "turns": r.turns,
            }
            for r in rows
        ]

    def _sample(
        self, logits: torch.Tensor, cfg: GenerationConfig, generator: torch.Generator
    ) -> torch.Tensor:
        if cfg.temperature <= 0:
            return logits.argmax(-1)
        logits = logits / cfg.temperature
        if cfg.top_k > 0:
            kth = torch.topk(logits, min(cfg.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if cfg.top_p < 1.0:
            ordered, order = logits.sort(dim=-1, descending=True)
            cumulative = ordered.softmax(-1).cumsum(-1)
            drop = cumulative - ordered.softmax(-1) > cfg.top_p  # keep the smallest set reaching top_p
            logits = logits.scatter(-1, order, ordered.masked_fill(drop, float("-inf")))
        return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)

    def _piece(self, token: int) -> str:
        """The text a token adds after another (decoding it alone drops the leading space of a
        SentencePiece token)."""
        if self._pieces is None:
            anchor = self.encode("x")[-1:]
            skip = len(self.tokenizer.decode(anchor))
            self._pieces = [
                self.tokenizer.decode(anchor + [v], skip_special_tokens=False)[skip:]
                for v in range(len(self.tokenizer))
            ]
        return self._pieces[token] if 0 <= token < len(self._pieces) else ""

    def _quoted(self, r: Row, cfg: GenerationConfig) -> list[str] | None:
        """What is left of the lines of the passages the row may cite that its current line is a prefix
        of, once it begins with `[` (an empty list: none); None when the line is free. Sets `r.citing`
        while the `[id]` is being written; with `linked_quotes`, records a citation once its id is whole."""
        if r.free or not r.line:
            return None
        text = self.tokenizer.decode(r.line, skip_special_tokens=False).rpartition("\n")[2]
        if not text:
            return None
        if not text.startswith("["):
            r.free = True
            return None
        r.citing = "]" not in text
        lines = [p for p in self._citable(r, cfg) if len(p) > len(text) and p.startswith(text)]
        if not lines and not r.citing:
            r.free = True  # its line is whole
            return None
        if cfg.linked_quotes and not r.citing and lines[0] not in r.cited:
            r.cited.append(lines[0])
            r.known += " " + normalize_answer(split_passage(html.unescape(lines[0]))[2])
        return [p[len(text) :] for p in lines]

    def _citable(self, r: Row, cfg: GenerationConfig) -> list[str]:
        """The passage lines the row may cite: every one its searches returned, or with `linked_quotes`
        those whose title the question or an earlier citation names."""
        if not cfg.linked_quotes:
            return r.passages
        key = (len(r.passages), len(r.cited))  # what the answer depends on only grows
        if r.citable[0] != key:
            r.citable = (key, [p for p in r.passages if links(split_passage(html.unescape(p))[1], r.known)])
        return r.citable[1]

    def _at_line_start(self, r: Row) -> bool:
        return not r.line or (len(r.line) == 1 and self._piece(r.line[0]).endswith("\n"))

    def _fits(self, token: int, rests: list[str]) -> bool:
        piece = self._piece(token)
        return bool(piece) and any(rest.startswith(piece) or piece.startswith(rest) for rest in rests)

    def _take_back_line(self, r: Row) -> int:
        """Drop the tokens of the row's current line (not the line break before it) from the row; the
        caller masks them out of the cache. Returns how many."""
        keep = 1 if r.line and "\n" in self._piece(r.line[0]) else 0
        taken = len(r.line) - keep
        for written in (r.cached, r.sampled, r.turn):
            del written[len(written) - taken :]
        r.line, r.free, r.citing = r.line[:keep], True, False
        return taken

    def _uncited(self, logits: torch.Tensor, cfg: GenerationConfig, generator) -> int:
        """A line's first token, the model's choice among those that do not begin a citation."""
        if self._brackets is None:
            brackets = [self._piece(v).lstrip().startswith("[") for v in range(len(self.tokenizer))]
            self._brackets = torch.tensor(brackets + [False] * max(0, logits.shape[-1] - len(brackets)))
        masked = logits.masked_fill(self._brackets[: logits.shape[-1]], float("-inf"))
        return int(self._sample(masked[None], cfg, generator)[0])

    def _quote(
        self, rests: list[str], logits: torch.Tensor, cfg: GenerationConfig, generator, prescribed: int | None
    ) -> int:
        """The next token of a quote: the model's choice among the tokens that keep the line a prefix of a
        passage line it is quoting (or end that line), sampled as `cfg` says; a branching retry's
        `prescribed` token if it keeps the line so."""

        def fits(v: int) -> bool:
            return self._fits(v, rests)

        if prescribed is not None and fits(prescribed):
            return prescribed

        order = logits.argsort(descending=True).tolist()
        if cfg.temperature <= 0:
            return next((v for v in order if fits(v)), order[0])
        allowed = [v for v in order[:256] if fits(v)] or [v for v in order if fits(v)]
        if not allowed:
            return order[0]
        mask = torch.full_like(logits, float("-inf"))
        mask[allowed] = 0.0
        return int(self._sample((logits + mask)[None], cfg, generator)[0])

    def _doubt_citation(self, r: Row, token: int, rests: list[str], p: torch.Tensor) -> None:
        """Inside a held citation's `[id]`, the model's choice between passages is its own: record it as a
        doubt when its next likeliest tokens that still fit lead to other passages' lines (a branch to one
        that leads to the same line would replay the same quote). `p`: the step's probabilities."""
        mine = self._lines(token, rests)
        others = []
        for v in p.topk(min(64, p.shape[-1])).indices.tolist():
            if p[v] < _UNLIKELY:
                break
            if v != token and self._fits(v, rests) and not self._lines(v, rests) & mine:
                others.append(v)
                if len(others) == _ALTERNATIVES:
                    break
        if others:
            r.doubts.append(
                (float(p[token] - p[others[0]]), r.chosen, tuple(others), len(r.turns), len(r.turn))
            )

    def _lines(self, token: int, rests: list[str]) -> set[int]:
        piece = self._piece(token)
        return {
            n for n, rest in enumerate(rests) if piece and (rest.startswith(piece) or piece.startswith(rest))
        }

    def _end_turn(self, i: int, r: Row, search: SearchFn, cfg: GenerationConfig) -> None:
        """The row's assistant turn just ended: record it, and either run its calls or finish."""
        text = self.tokenizer.decode(r.turn[:-1], skip_special_tokens=False)
        r.turns.append(r.turn)
        r.turn, r.line, r.free, r.citing = [], [], False, False
        content, calls = parse_turn(text)
        if not calls:
            r.messages.append({"role": "assistant", "content": content})
            r.stop = "answer"
            r.done = True
            return
        if not cfg.run_tools:
            r.messages.append(self._assistant(r, content, calls))
            r.calls += len(calls)
            r.done, r.stop = True, "tool_calls"
            return
        if r.calls >= cfg.max_tool_calls:
            if r.messages[-1].get("content") == CALL_LIMIT:  # told once already and still calling
                r.messages.append({"role": "assistant", "content": content})
                self._finish(r, "max_tool_calls")
                return
            calls = calls[:1]
        turn = self._assistant(r, content, calls)
        before = _render(self.tokenizer, r.messages + [turn], self.tools, False)
        r.messages.append(turn)
        for call in turn["tool_calls"]:
            result = self._run(i, r, call, search, cfg)
            r.passages.extend(passage_lines(result))
            r.messages.append({"role": "tool", "tool_call_id": call["id"], "name": SEARCH, "content": result})
        after = _render(self.tokenizer, r.messages, self.tools, True)
        if not after.startswith(before):
            raise ValueError(
                "the chat template does not render a conversation as a prefix of its continuation"
            )
        r.forced.extend(self.encode(after[len(before) :]))

    def _assistant(self, r: Row, content: str, calls: list[dict]) -> dict:
        numbered = [{**call, "id": f"call_{r.calls + j}"} for j, call in enumerate(calls)]
        return {"role": "assistant", "content": content, "tool_calls": numbered}

    def _run(self, i: int, r: Row, call: dict, search: SearchFn, cfg: GenerationConfig) -> str:
        r.calls += 1
        if r.calls > cfg.max_tool_calls:
            return CALL_LIMIT
        try:
            query, k = parse_search_call(_with_default_k(call, cfg.k))
        except ToolCallError as e:
            return f"Error: {e}."
        try:
            return render_results(search(i, query, k))
        except SearchUnavailable:
            return UNAVAILABLE

    def _finish(self, r: Row, why: str) -> None:
        """Stop a row early; what it had written of its current turn is kept as an assistant turn."""
        if r.turn and r.turn[-1] in self.end_ids:  # stopped on the token that ends the turn
            r.turn.pop()
        if r.turn:
            r.turns.append(r.turn)
            text = self.tokenizer.decode(r.turn, skip_special_tokens=False)
            r.messages.append({"role": "assistant", "content": parse_turn(text)[0]})
        r.done, r.stop, r.forced, r.turn = True, why, deque(), []


def _verdict(messages: list[dict], cfg: GenerationConfig) -> tuple[bool, Fault | None]:
    """Whether the conversation ends with an answer that its own search results support, and, with
    `cfg.steps`, where its written steps first contradict them (core.worlds.steps.fault). It passes with
    both."""
    answer = final_answer(messages[-1].get("content")) if messages[-1]["role"] == "assistant" else None
    held = answer is not None and supported(answer, messages, cfg.linked)
    return held, fault(messages) if cfg.steps else None


def _with_default_k(call: dict, k: int) -> dict:
    """A call that names no k gets the engine's default, so the tool's own default never surprises."""
    try:
        args = json.loads(call["function"]["arguments"])
    except json.JSONDecodeError:
        return call
    if isinstance(args, dict) and "k" not in args:
        args["k"] = k
        return {**call, "function": {**call["function"], "arguments": json.dumps(args)}}
    return call
