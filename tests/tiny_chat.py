"""Traces built with the tool protocol, and a tokenizer trained on them in a blink, for the chat, tokenizer
and data tests."""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.cache_utils import DynamicLayer

from cogcore.core.chat import ASSISTANT, END, render
from cogcore.core.tools import SEARCH_TOOL, SYSTEM_PROMPT, render_results, search_call
from cogcore.distill.tokenizer import train_tokenizer

PASSAGES = [
    {"id": "w0-p1-born_in", "title": "Rouler Bristor", "text": "Rouler Bristor was born in Verum."},
    {
        "id": "w0-p1-works_for",
        "title": "Rouler Bristor",
        "text": "Rouler Bristor works for Kouthoustus Bank.",
    },
    {"id": "w0-c2-population", "title": "Verum", "text": "Verum has a population of 48213."},
    {"id": "w0-c3-population", "title": "Godas", "text": "Godas has a population of 1907."},
    {"id": "w0-p4-birth_year", "title": "Kroubran Tobras", "text": "Kroubran Tobras was born in 1950."},
    {"id": "w0-p5-spouse", "title": "Zoë Ångström", "text": "Zoë Ångström is married to Vaes Vuzou."},
]
BY_ID = {p["id"]: p for p in PASSAGES}


def make_trace(trace_id: str, question: str, steps: list[tuple[str, str, list[str]]], final: str) -> dict:
    """A trace: one assistant turn per (reasoning, query, passage ids) step, each answered by a tool turn,
    then the final assistant turn `final` (ending with its Answer: line)."""
    messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": question}]
    for n, (reasoning, query, ids) in enumerate(steps):
        call = search_call(f"call_{n}", query, 3)
        messages.append({"role": "assistant", "content": reasoning, "tool_calls": [call]})
        results = render_results([BY_ID[i] for i in ids])
        messages.append({"role": "tool", "tool_call_id": call["id"], "name": "search", "content": results})
    messages.append({"role": "assistant", "content": final})
    return {"id": trace_id, "messages": messages, "metadata": {}}


TRACES = [
    make_trace(
        "lookup",
        "Which organisation does Rouler Bristor work for?",
        [("I need the employer of Rouler Bristor.", "Rouler Bristor employer", ["w0-p1-works_for"])],
        "Rouler Bristor works for Kouthoustus Bank [w0-p1-works_for].\nAnswer: Kouthoustus Bank",
    ),
    make_trace(
        "compose",
        "How many people live in the birthplace of Rouler Bristor?",
        [
            ("First the birthplace of Rouler Bristor.", "Rouler Bristor birthplace", ["w0-p1-born_in"]),
            (
                "He was born in Verum. Now its population.",
                "Verum population",
                ["w0-c2-population", "w0-p1-born_in"],
            ),
        ],
        "Verum has 48213 people [w0-c2-population].\nAnswer: 48213",
    ),
    make_trace(
        "arithmetic",
        "How many more people live in Verum than in Godas?",
        [
            ("I need both populations.", "Verum population", ["w0-c2-population"]),
            ("Now Godas.", "Godas population", ["w0-c3-population"]),
        ],
        "48213 - 1907 = 46306.\nAnswer: 46306",
    ),
    make_trace(
        "unicode",
        "Who is Zoë Ångström married to?",
        [("I need the spouse of Zoë Ångström.", "Zoë Ångström spouse", ["w0-p5-spouse"])],
        "Zoë Ångström is married to Vaes Vuzou [w0-p5-spouse].\nAnswer: Vaes Vuzou",
    ),
    make_trace(
        "unanswerable",
        "What is the population of Kelvar?",
        [
            ("I need the population of Kelvar.", "Kelvar population", []),
            ("Nothing; another wording.", "Kelvar inhabitants", ["w0-c3-population"]),
            ("Still nothing about Kelvar.", "Kelvar city", []),
        ],
        "The search results do not say.\nAnswer: unknown",
    ),
    make_trace(
        "year",
        "In what year was Kroubran Tobras born?",
        [("I need the birth year of Kroubran Tobras.", "Kroubran Tobras birth year", ["w0-p4-birth_year"])],
        "Kroubran Tobras was born in 1950 [w0-p4-birth_year].\nAnswer: 1950",
    ),
]


def training_texts() -> list[str]:
    """What a from-scratch tokenizer is trained on: the passages and the rendered traces."""
    passages = [f"{p['title']}: {p['text']}" for p in PASSAGES]
    return passages + [render(t["messages"], tools=[SEARCH_TOOL]) for t in TRACES]


def tiny_tokenizer(out_dir=None, vocab_size: int = 512):
    return train_tokenizer(training_texts(), vocab_size, out_dir)


def tiny_llama(tokenizer, seed: int = 0, **config) -> LlamaForCausalLM:
    """A random 2-layer Llama over `tokenizer`'s vocabulary, in eval mode; `config` overrides any field."""
    torch.manual_seed(seed)
    fields = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 1024,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        **config,
    }
    return LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), **fields)).eval()


class _RowIds(DynamicLayer):
    """Not a layer of keys: which engine row each batch position holds. Riding in the cache, it follows the
    engine's `batch_select_indices` when finished rows leave the batch."""

    def __init__(self, width: int, start: int = 0):
        super().__init__()
        self.ids = list(range(start, start + width))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self.ids = [self.ids[j] for j in indices.tolist()]

    def join(self, other: _RowIds) -> None:  # rows prefilled apart join the batch (continuous batching)
        self.ids += other.ids

    def trim(self, n: int) -> None:  # padding columns leave the cache: the rows stay as they are
        pass


def batch_rows(cache, width: int, start: int = 0) -> list[int]:
    """The engine rows a model's batch positions hold now, for test models that keep state per row: the
    batch is every row at prefill (an empty cache; numbered from `start`), then shrinks as the engine drops
    finished rows and grows as rows prefilled apart join it."""
    if cache is None:  # a plain forward (scoring), no engine
        return list(range(start, start + width))
    if cache.get_seq_length() == 0:
        cache.layers.append(_RowIds(width, start))  # the engine makes a new cache for every prefill
    return next(layer.ids for layer in cache.layers if isinstance(layer, _RowIds))


class ScriptedLM(torch.nn.Module):
    """A real tiny Llama for the cache plumbing, whose logits are overridden to say each row's scripted
    assistant turns. A turn is a string, or a list of strings in order of preference: the model puts its
    highest logit on the next token of the first one that what it has written so far still follows, the
    next highest on the next one's, and so on (held off every one, it goes on with the first from the
    same position). It reads what it has written from the tokens the engine fed
    it whose attention the mask still keeps (a line the engine took back no longer counts), and it sees
    every token exactly once, as the engine feeds it, so it also proves that the engine never re-encodes
    a prefix: a re-fed prefix would corrupt the histories it keeps."""

    def __init__(self, tokenizer, scripts, noise: float = 0.0, header: str = ASSISTANT, end: str = END):
        super().__init__()
        self.noise = noise  # > 0: the tiny model's own logits, times this, are added (choices to sample)
        self.inner = tiny_llama(tokenizer)
        self.config = self.inner.config
        self.tokenizer = tokenizer
        self.end = end  # the text that ends a turn; `header` opens one (another chat family's, or cogcore's)
        self.script(scripts)
        self.header = tokenizer(header, add_special_tokens=False)["input_ids"]

    def script(self, scripts):
        encode = lambda t: self.tokenizer(t + self.end, add_special_tokens=False)["input_ids"]  # noqa: E731
        self.turns = [[[encode(a) for a in ([t] if isinstance(t, str) else t)] for t in s] for s in scripts]
        self.fed = [[] for _ in scripts]  # every token fed, per row, one per attention column
        self.history = [[] for _ in scripts]  # the tokens fed that are not padding

    def forward(self, input_ids, attention_mask, **kwargs):
        rows = batch_rows(kwargs["cache"], input_ids.shape[0])
        out = self.inner(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        new = attention_mask[:, -input_ids.shape[1] :].bool()
        logits = torch.full((input_ids.shape[0], input_ids.shape[1], self.config.vocab_size), -1e9)
        for i, row in enumerate(rows):
            self.fed[row] += input_ids[i].tolist()
            self.history[row] += input_ids[i][new[i]].tolist()
            live = [t for t, keep in zip(self.fed[row], attention_mask[i].tolist(), strict=True) if keep]
            n = len(self.header)
            heads = [j + n for j in range(len(live) - n + 1) if live[j : j + n] == self.header]
            turn, written = len(heads) - 1, live[heads[-1] :]
            alternatives = self.turns[row][min(turn, len(self.turns[row]) - 1)]
            following = [s for s in alternatives if s[: len(written)] == written]
            # held off every script (a quote), it goes on with the first from the same position
            for rank, script in enumerate(following or alternatives[:1]):
                nxt = script[len(written)] if len(written) < len(script) else self.tokenizer.eos_token_id
                logits[i, -1, nxt] = max(float(logits[i, -1, nxt]), -float(rank))
        out.logits = logits + self.noise * out.logits.float() if self.noise else logits
        return out


class BatchScriptedLM(ScriptedLM):
    """A ScriptedLM that says the next set of scripts in each batch the engine starts (a retry is a new
    batch of the rows being retried, in their order)."""

    def __init__(self, tokenizer, batches, noise: float = 0.0, **family):
        super().__init__(tokenizer, batches[0], noise, **family)
        self.batches, self.started = batches, 0

    def forward(self, input_ids, attention_mask, **kwargs):
        if kwargs["cache"].get_seq_length() == 0:  # the engine begins a batch
            self.script(self.batches[self.started])
            self.started += 1
        return super().forward(input_ids, attention_mask, **kwargs)
