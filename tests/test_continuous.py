"""Continuous batching: rows prefilled apart join a running batch (their cache rows joined to its, left-padded
to one width) and answer exactly as they would alone; each row's output is handed over as it finishes."""

from __future__ import annotations

import torch
from rule_lm import RuleLM, library
from tiny_chat import tiny_llama, tiny_tokenizer

from cogcore.core.engine import Engine
from cogcore.core.generation import GenerationConfig
from cogcore.core.kvcache import growing_cache, join_caches


def forward(model, ids: list[list[int]], cache, attention: torch.Tensor, positions: torch.Tensor):
    out = model(
        input_ids=torch.tensor(ids),
        attention_mask=attention,
        position_ids=positions,
        cache=cache,
        use_cache=True,
    )
    return out.logits[:, -1]


def prefill(model, prompt: list[int]):
    cache, attention = growing_cache(model), torch.ones((1, len(prompt)), dtype=torch.long)
    logits = forward(model, [prompt], cache, attention, torch.arange(len(prompt))[None])
    return cache, attention, logits


def test_joined_cache_rows_give_each_row_the_logits_it_has_alone():
    model = tiny_llama(tiny_tokenizer())
    short, long = [5, 9, 12, 7], [3, 14, 15, 9, 2, 6, 5, 3, 5]
    alone = []
    for prompt in (short, long):
        cache, attention, _ = prefill(model, prompt)
        attention = torch.cat([attention, torch.ones((1, 1), dtype=torch.long)], 1)
        alone.append(forward(model, [[11]], cache, attention, torch.tensor([[len(prompt)]])))

    cache, attention, _ = prefill(model, short)  # the running batch, then the longer row joins it
    other, other_attention, _ = prefill(model, long)
    width = join_caches(cache, other)
    assert width == len(long) and cache.get_seq_length() == len(long)
    pad = torch.nn.functional.pad
    attention = torch.cat([pad(attention, (width - 4, 0)), other_attention])
    attention = torch.cat([attention, torch.ones((2, 1), dtype=torch.long)], 1)
    both = forward(model, [[11], [11]], cache, attention, torch.tensor([[len(short)], [len(long)]]))
    torch.testing.assert_close(both, torch.cat(alone), rtol=1e-4, atol=1e-5)


def test_admitted_conversations_answer_as_they_would_alone_and_each_is_handed_over_when_done():
    tokenizer = tiny_tokenizer()
    engine = Engine(RuleLM(tokenizer), tokenizer)
    ask = [[{"role": "user", "content": f"Tell me about topic {n}"}] for n in range(5)]
    cfg = GenerationConfig(max_new_tokens=300)

    def search(row: int, query: str, k: int) -> list[dict]:
        return library(query, k)

    alone = [engine.generate([conversation], search, cfg)[0] for conversation in ask]
    first = ask[0]
    # two join at the first step, one at the fourth, and the last once the batch has emptied
    waiting = [[ask[1], ask[2]], [], [], [ask[3]]]
    done = []

    def admit() -> list[list[dict]]:
        if waiting:
            return waiting.pop(0)
        if len(done) == 4 and len(ask) == 5:
            return [ask.pop()]
        return []

    outs = engine.generate(
        [first], search, cfg, admit=admit, on_done=lambda row, out: done.append((row, out))
    )
    assert [out["messages"] for out in outs] == [out["messages"] for out in alone]
    assert [out["tokens"] for out in outs] == [out["tokens"] for out in alone]
    assert sorted(row for row, _ in done) == [0, 1, 2, 3, 4]  # row 4 joined a batch that had emptied
    assert all(out == outs[row] for row, out in done)
    assert engine.model.widest >= 3  # they ran together


def test_a_cache_whose_layers_cannot_join_takes_new_rows_once_its_batch_is_done(monkeypatch):
    tokenizer = tiny_tokenizer()
    engine = Engine(RuleLM(tokenizer), tokenizer)
    monkeypatch.setattr("cogcore.core.engine.joinable", lambda cache: False)  # as with sliding windows
    ask = [[{"role": "user", "content": f"Tell me about topic {n}"}] for n in range(3)]
    waiting = [ask[1:]]
    outs = engine.generate(
        [ask[0]],
        lambda row, query, k: library(query, k),
        GenerationConfig(),
        admit=lambda: [*(waiting.pop() if waiting else [])],
    )
    assert [final for out in outs for final in out["messages"][-1:]] == [
        {
            "role": "assistant",
            "content": f"[topic-{n}] Topic {n}: Topic {n} is the number {n * n}.\nAnswer: topic-{n}",
        }
        for n in range(3)
    ]
    assert engine.model.widest == 2  # the first ran alone; the two waiting ran together after it


def test_a_batch_that_rows_keep_joining_stays_as_narrow_as_its_rows():
    """Rows join left-padded to the batch's width, and a batch that new rows keep joining never empties:
    without trimming the padding that no row attends to, every step would attend over the columns of rows
    long finished."""
    tokenizer = tiny_tokenizer()
    engine = Engine(RuleLM(tokenizer), tokenizer)
    widths = []
    engine.model.inner.register_forward_hook(
        lambda module, args, kwargs, out: widths.append(kwargs["attention_mask"].shape[1]), with_kwargs=True
    )
    ask = [[{"role": "user", "content": f"Tell me about topic {n}"}] for n in range(16)]
    cfg = GenerationConfig(max_new_tokens=300)

    def search(row: int, query: str, k: int) -> list[dict]:
        return library(query, k)

    alone = [engine.generate([conversation], search, cfg)[0] for conversation in ask]
    longest = max(len(out["tokens"]) for out in alone)
    widths.clear()
    waiting = [([ask[1 + n // 12]] if n % 12 == 0 and 1 + n // 12 < len(ask) else []) for n in range(12 * 15)]
    outs = engine.generate([ask[0]], search, cfg, admit=lambda: waiting.pop(0) if waiting else [])
    assert [out["tokens"] for out in outs] == [out["tokens"] for out in alone]
    assert len(widths) >= 2 * longest  # the batch ran for twice as long as any row lasts
    assert max(widths) <= 2 * longest
