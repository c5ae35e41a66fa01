"""Traces built with the tool protocol, and a tokenizer trained on them in a blink, for the chat, tokenizer
and data tests."""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.cache_utils import DynamicLayer

from cogcore.core.chat import render
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

    def __init__(self, width: int):
        super().__init__()
        self.ids = list(range(width))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self.ids = [self.ids[j] for j in indices.tolist()]


def batch_rows(cache, width: int) -> list[int]:
    """The engine rows a model's batch positions hold now, for test models that keep state per row: the
    batch is every row at prefill (an empty cache), then shrinks as the engine drops finished rows."""
    if cache is None:  # a plain forward (scoring), no engine
        return list(range(width))
    if cache.get_seq_length() == 0:
        cache.layers.append(_RowIds(width))  # the engine makes a new cache for every batch
    return next(layer.ids for layer in cache.layers if isinstance(layer, _RowIds))
