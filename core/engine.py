"""The tool-loop engine: batched generation that stops at a `search` call, runs it, injects the rendered
result as forced tokens and continues from the KV cache without re-encoding the prefix.

Every row advances exactly one token per step: the next of its forced tokens (a tool turn and the next
assistant header) if it has any, else one the model chooses. So rows at different steps of their own
conversations share one batch and one cache (rows that finished leave it, so a batch does not run at
full width until its longest answer ends), and `sampled` records which tokens the model chose. A turn
ends at an end-of-turn token; if it holds a tool call (read in the model's own format, `Engine.format`:
core/toolformats.py), the call runs and the tool turn is injected, otherwise the row is finished. A
malformed call is answered in the tool turn with what is wrong, never a crash, and a bound on calls per
answer keeps a looping model finite.

The loop knows no world and judges no answer. A caller may hand it, per row, a decoding constraint
(core.constraints: verbatim quotes over what the row may cite), tokens to take instead of the model's at
given choices, and ask it to record its doubts: the choices a branching retry may take otherwise
(core.retries runs those retries; core.generation.generate is what callers use).

Rows may also join a running batch as others finish (`admit`, continuous batching, which `cogcore serve`
uses), and each row's output may be handed over as soon as it is done (`on_done`).

An optional `on_token` callback sees each token the model chooses as it is chosen (the assistant streams
from it) and can end a row early (a stop string, a client that went away, Ctrl-C); with `run_tools=False` a
turn with calls ends the row instead, for a caller that runs the calls itself.

What comes back is, per row, the conversation as trace messages (the trace contract of core/trace.py)
plus counts; the callers (evals, the assistant, HF teachers) add the metadata.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from transformers import DynamicCache, PreTrainedTokenizerBase

from cogcore.core.chat import chat_messages
from cogcore.core.constraints import ALTERNATIVES, UNLIKELY, Citable, VerbatimQuote, Vocab
from cogcore.core.generation import GenerationConfig
from cogcore.core.kvcache import growing_cache, join_caches, joinable, trim_padding
from cogcore.core.sampling import Sampler
from cogcore.core.toolformats import ToolFormat, get_format
from cogcore.core.toolformats import tool_format as detect_format
from cogcore.core.tools import (
    SEARCH,
    SEARCH_TOOL,
    UNAVAILABLE,
    SearchUnavailable,
    ToolCallError,
    parse_search_call,
    passage_lines,
    render_results,
)

# search(row, query, k) -> ranked passages; the row index lets each row search its own collection.
SearchFn = Callable[[int, str, int], list[dict]]
# on_token(row, token) sees each sampled token as it is chosen (streaming); returning True ends the row
# there (stop="stopped"): a stop string, a token budget, a client that went away, Ctrl-C.
TokenFn = Callable[[int, int], bool]
# citable(messages) -> what a row answering `messages` may quote: its quote constraint's passages
CitableFn = Callable[[list[dict]], Citable]
# admit() -> conversations that join a running batch (continuous batching); [] when none is waiting
AdmitFn = Callable[[], list[list[dict]]]
# on_done(row, output) sees each row's output as soon as the row is done
DoneFn = Callable[[int, dict], None]

CALL_LIMIT = "Tool call limit reached: answer with what you have."


class Doubt(NamedTuple):
    """A choice the model made that a branching retry may make otherwise."""

    gap: float  # the chosen token's probability less the likeliest other's: small is unsure
    choice: int  # which of the row's choices (forced tokens not counted)
    others: tuple[int, ...]  # the tokens a retry may take there instead, likeliest first
    turn: int  # the assistant turn it is in
    index: int  # its index among that turn's tokens


@dataclass
class Row:
    messages: list[dict]
    cached: list[int]  # every token in the KV cache for this row, prompt included
    prompt: int  # how many of them are the prompt
    quote: VerbatimQuote | None  # the row's quote constraint, if quotes are held
    prescribed: dict[int, int]  # choice index -> token taken there instead of the model's (a retry)
    forced: deque = field(default_factory=deque)  # tokens to inject before the model chooses again
    turn: list[int] = field(default_factory=list)  # chosen tokens of the current assistant turn
    turns: list[list[int]] = field(default_factory=list)  # the tokens of each finished assistant turn
    sampled: list[bool] = field(default_factory=list)  # per generated token: chosen (True) or forced
    chosen: int = 0  # tokens the model chose so far: the index of its next choice
    doubts: list[Doubt] = field(default_factory=list)
    calls: int = 0
    done: bool = False
    stop: str = ""  # answer | max_new_tokens | max_tool_calls | context | stopped | tool_calls


def parse_turn(text: str, fmt: ToolFormat | None = None) -> tuple[str, list[dict]]:
    """Split a generated assistant turn into its text and its tool calls, written in `fmt` (default
    cogcore's chat format; core/toolformats.py)."""
    return (fmt or get_format("cogcore")).parse(text)


def _render(tokenizer: PreTrainedTokenizerBase, messages: list[dict], tools: list[dict], prompt: bool) -> str:
    return tokenizer.apply_chat_template(
        chat_messages(tokenizer, messages), tools=tools, tokenize=False, add_generation_prompt=prompt
    )


class Engine:
    def __init__(
        self,
        model,
        tokenizer: PreTrainedTokenizerBase,
        tools: list[dict] | None = None,
        tool_format: ToolFormat | None = None,
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.tools = tools if tools is not None else [SEARCH_TOOL]
        # How the model writes a call (core/toolformats.py): given, else its template's (None: no calls).
        self.format = tool_format or detect_format(tokenizer)
        # A chat model may end its turn with any of its generation config's eos ids (<|eot_id|>, ...).
        eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        self.end_ids = {tokenizer.eos_token_id, *(eos if isinstance(eos, list) else [eos])} - {None}
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.context = getattr(model.config, "max_position_embeddings", 1 << 30)
        self.vocab = Vocab(tokenizer)

    def parse(self, text: str) -> tuple[str, list[dict]]:
        """A generated assistant turn's text and tool calls, in the model's format."""
        return self.format.parse(text) if self.format is not None else (text.strip(), [])

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def prompt(self, messages: list[dict]) -> list[int]:
        """The token ids a conversation is prefilled with (its length is what must fit the window)."""
        return self.encode(_render(self.tokenizer, messages, self.tools, prompt=True))

    @torch.no_grad()
    def generate(
        self,
        conversations: list[list[dict]],
        search: SearchFn,
        cfg: GenerationConfig,
        on_token: TokenFn | None = None,
        citable: CitableFn | None = None,
        prescribed: list[dict[int, int]] | None = None,
        doubts: bool = False,
        admit: AdmitFn | None = None,
        on_done: DoneFn | None = None,
    ) -> list[dict]:
        """Answer each conversation (messages ending with a user turn) once; return, per row, {"messages",
        "tokens" (prompt and generated ids), "prompt_tokens", "sampled" (per generated token: chosen by the
        model, or forced), "tool_calls", "stop" (answer | max_new_tokens | max_tool_calls | context |
        stopped | tool_calls), "turns" (the token ids of each assistant turn), "doubts"}.

        `citable`: quotes are held verbatim to what it says each row may cite (None: no quote holding).
        `prescribed`: per row, tokens taken instead of the model's choice at those choice indices.
        `doubts`: record, per row, each greedy choice that was the model's own, with the tokens it
        thought next likeliest (`Doubt`): where a branching retry may branch.
        `admit`: continuous batching. Polled once a step, it returns more conversations, which join the
        running batch as rows n, n+1, ... (prefilled on their own, their cache rows then joined to the
        batch's); the call returns once every row is done and it returns none.
        `on_done(row, output)`: each row's output as soon as that row is done."""

        def new_row(messages: list[dict], chosen: dict[int, int]) -> Row:
            ids = self.prompt(messages)
            quote = None
            if citable is not None:
                quote = VerbatimQuote(self.vocab, citable(messages), streaming=on_token is not None)
                for m in messages:
                    if m.get("role") == "tool":
                        quote.add(passage_lines(m.get("content")))
            return Row([dict(m) for m in messages], ids, len(ids), quote, chosen)

        rows = [new_row(m, prescribed[n] if prescribed else {}) for n, m in enumerate(conversations)]
        device = next(self.model.parameters()).device
        sample = Sampler(cfg)
        cache, attention, logits = self._prefill(rows, device)
        batch = list(range(len(rows)))  # the rows still in the batch tensors (finished ones leave it)
        while True:
            if (width := _forced_run([rows[i] for i in batch], cfg)) > 1:
                step, live = self._feed_forced(batch, rows, width, cfg, on_done)
            else:
                step, live = self._choose(
                    batch, rows, logits, attention, sample, search, cfg, on_token, doubts, on_done
                )
            keep = [j for j, i in enumerate(batch) if not rows[i].done]
            # A cache with layers that cannot take rows (sliding windows) takes new ones only once empty.
            admitting = admit is not None and (not keep or joinable(cache))
            joining = [new_row(m, {}) for m in admit()] if admitting else []
            if not keep and not joining:
                break
            if not keep:  # the batch is done: the joining rows are the new batch
                cache, attention, logits = self._prefill(joining, device)
                batch = list(range(len(rows), len(rows) + len(joining)))
                rows += joining
                continue
            if len(batch) - len(keep) >= max(1, len(batch) // 8):  # drop finished rows from the batch
                index = torch.tensor(keep)
                cache.batch_select_indices(index.to(device))
                attention, step, live = attention[index], step[index], live[index]
                batch = [batch[j] for j in keep]
            if admit is not None and joinable(cache):  # a batch rows join never empties: keep it narrow
                attention = trim_padding(cache, attention)
            attention = torch.cat([attention, live], dim=1)
            width = step.shape[1]
            ends = [len(rows[i].cached) for i in batch]  # a row that is done stays put (and masked)
            positions = torch.tensor([[max(0, end - width + t) for t in range(width)] for end in ends])
            logits = self._forward(step, attention, positions, cache, device)
            if joining:  # prefilled apart, then their cache rows join the batch's, left-padded to one width
                joined, joined_attention, joined_logits = self._prefill(joining, device)
                width = join_caches(cache, joined)
                attention = torch.cat([_left_pad(attention, width), _left_pad(joined_attention, width)])
                logits = torch.cat([logits, joined_logits])
                batch += range(len(rows), len(rows) + len(joining))
                rows += joining
        return [_output(r) for r in rows]

    def _feed_forced(self, batch, rows, width, cfg, on_done) -> tuple[torch.Tensor, torch.Tensor]:
        """Every row still going has `width` forced tokens next (a tool turn; a lone row's, typically, as
        in `cogcore chat`): they go into the cache in one forward rather than one a step, which is most of
        what a search cost a chat answer (BENCHMARKS.md, "A tool turn in one forward"). The step's ids and
        its attention columns."""
        step = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        live = torch.zeros((len(batch), width), dtype=torch.long)
        for j, i in enumerate(batch):
            r = rows[i]
            if r.done:
                continue
            tokens = [r.forced.popleft() for _ in range(width)]
            step[j], live[j] = torch.tensor(tokens), 1
            r.cached += tokens
            r.sampled += [False] * width
            self._check_limits(i, r, cfg, on_done)
        return step, live

    def _choose(
        self, batch, rows, logits, attention, sample, search, cfg, on_token, doubts, on_done
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One token per row: its forced one, or the model's choice (held to a quote, a prescribed one,
        doubts recorded); a turn that ends runs its calls. The step's ids and its attention column."""
        step = torch.full((len(batch), 1), self.pad_id, dtype=torch.long)
        live = torch.zeros((len(batch), 1), dtype=torch.long)
        choices = sample(logits)
        probs = logits.softmax(-1) if doubts else None
        top = probs.topk(1 + ALTERNATIVES, dim=-1) if doubts else None
        for j, i in enumerate(batch):
            r = rows[i]
            if r.done:
                continue
            forced = bool(r.forced)
            if forced:
                token = r.forced.popleft()
            else:
                token = r.prescribed.get(r.chosen, int(choices[j]))
                quoting, held = None, False
                if r.quote is not None:
                    choice = r.quote.choose(token, logits[j], sample, r.prescribed.get(r.chosen))
                    token, quoting, held = choice.token, choice.quoting, choice.held
                    if choice.taken_back:
                        for written in (r.cached, r.sampled, r.turn):
                            del written[len(written) - choice.taken_back :]
                        attention[j, attention.shape[1] - choice.taken_back :] = 0
                if doubts and held and r.quote.citing:  # which passage to cite is the model's choice
                    if others := r.quote.alternatives(token, quoting, probs[j]):
                        gap = float(probs[j, token] - probs[j, others[0]])
                        r.doubts.append(Doubt(gap, r.chosen, others, len(r.turns), len(r.turn)))
                # a doubt is a free greedy choice: a held quote's token is the quote's, whatever is chosen
                if doubts and not quoting and token == int(top.indices[j, 0]):
                    gap = float(top.values[j, 0] - top.values[j, 1])
                    alternatives = zip(top.values[j, 1:].tolist(), top.indices[j, 1:].tolist(), strict=True)
                    if others := tuple(v for p, v in alternatives if p >= UNLIKELY):
                        r.doubts.append(Doubt(gap, r.chosen, others, len(r.turns), len(r.turn)))
                r.chosen += 1
            step[j, 0], live[j, 0] = token, 1
            r.cached.append(token)
            r.sampled.append(not forced)
            if not forced:
                r.turn.append(token)
                if r.quote is not None:
                    r.quote.observe(token)
                if on_token is not None and on_token(i, token):
                    self._finish(r, "stopped")
                elif token in self.end_ids:
                    self._end_turn(i, r, search, cfg)
            self._check_limits(i, r, cfg, on_done)
        return step, live

    def _check_limits(self, i: int, r: Row, cfg: GenerationConfig, on_done: DoneFn | None) -> None:
        """Finish the row at its token budget or the context's end; report it once done."""
        if not r.done and len(r.sampled) >= cfg.max_new_tokens:
            self._finish(r, "max_new_tokens")
        if not r.done and len(r.cached) + len(r.forced) >= self.context:
            self._finish(r, "context")
        if r.done and on_done is not None:
            on_done(i, _output(r))

    def _prefill(self, rows: list[Row], device) -> tuple[DynamicCache, torch.Tensor, torch.Tensor]:
        """A new cache holding `rows`' prompts, left-padded so that every row's next token sits in the last
        column; its attention mask and the rows' next-token logits."""
        width = max(len(r.cached) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            input_ids[i, width - len(r.cached) :] = torch.tensor(r.cached)
            attention[i, width - len(r.cached) :] = 1
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        cache = growing_cache(self.model)
        return cache, attention, self._forward(input_ids, attention, positions, cache, device)

    def _forward(self, input_ids, attention, positions, cache, device) -> torch.Tensor:
        """The next-token logits of each row (float32, on the CPU), the cache extended in place."""
        out = self.model(
            input_ids=input_ids.to(device),
            attention_mask=attention.to(device),
            position_ids=positions.to(device),
            cache=cache,
            use_cache=True,
        )
        return out.logits[:, -1, :].float().cpu()

    def _end_turn(self, i: int, r: Row, search: SearchFn, cfg: GenerationConfig) -> None:
        """The row's assistant turn just ended: record it, and either run its calls or finish."""
        text = self.tokenizer.decode(r.turn[:-1], skip_special_tokens=False)
        r.turns.append(r.turn)
        r.turn = []
        if r.quote is not None:
            r.quote.end_turn()
        content, calls = self.parse(text)
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
            if r.quote is not None:
                r.quote.add(passage_lines(result))
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
            r.messages.append({"role": "assistant", "content": self.parse(text)[0]})
        r.done, r.stop, r.forced, r.turn = True, why, deque(), []


def _forced_run(rows: list[Row], cfg: GenerationConfig) -> int:
    """How many forced tokens every row still going takes next, none of them crossing the token budget: 0
    as soon as one of them has its own choice to make."""
    going = [r for r in rows if not r.done]
    return min((min(len(r.forced), cfg.max_new_tokens - len(r.sampled)) for r in going), default=0)


def _output(r: Row) -> dict:
    return {
        "messages": r.messages,
        "tokens": r.cached,
        "prompt_tokens": r.prompt,
        "sampled": r.sampled,
        "tool_calls": r.calls,
        "stop": r.stop,
        "turns": r.turns,
        "doubts": r.doubts,
    }


def _left_pad(attention: torch.Tensor, width: int) -> torch.Tensor:
    """An attention mask widened to `width` columns by masked columns on the left."""
    return torch.nn.functional.pad(attention, (width - attention.shape[1], 0))


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
