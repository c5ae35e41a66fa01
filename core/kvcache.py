"""A KV cache for the tool loop: transformers' DynamicCache whose full-attention layers grow in place."""

from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


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

    def join(self, other: DynamicLayer) -> None:
        """Append `other`'s rows, the shorter side's keys and values left-padded with zeros."""
        n, m = self.get_seq_length(), other.get_seq_length()
        width = max(n, m)
        joined = []
        for mine, theirs in ((self.keys, other.keys), (self.values, other.values)):
            rows = mine.shape[0] + theirs.shape[0]
            buffer = mine.new_zeros((rows, *mine.shape[1:-2], max(2 * width, 64), mine.shape[-1]))
            buffer[: mine.shape[0], ..., width - n : width, :] = mine
            buffer[mine.shape[0] :, ..., width - m : width, :] = theirs
            joined.append(buffer)
        self._buffers = joined
        self.keys, self.values = (b[..., :width, :] for b in joined)

    def trim(self, n: int) -> None:
        """Drop the first `n` columns (left padding no row attends to any more), without a copy."""
        if m := self.get_seq_length():
            self._buffers = [b[..., n:, :] for b in self._buffers]
            self.keys, self.values = (b[..., : m - n, :] for b in self._buffers)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if m := self.get_seq_length():
            self._buffers = [b[indices, ...] for b in self._buffers]
            self.keys, self.values = (b[..., :m, :] for b in self._buffers)


def joinable(cache: DynamicCache) -> bool:
    """Whether rows of another batch can join `cache` (`join_caches`): every layer says how."""
    return all(hasattr(layer, "join") for layer in cache.layers)


def join_caches(cache: DynamicCache, other: DynamicCache) -> int:
    """Append the rows of `other` (a batch prefilled apart) to `cache`'s batch, in place, for continuous
    batching; the shorter side is left-padded with zero keys and values, columns its attention mask
    masks. Returns the joined sequence length. A layer that is no growing full-attention layer must say
    how its rows join (a `join(other)` method); sliding-window layers cannot."""
    for mine, theirs in zip(cache.layers, other.layers, strict=True):
        if not hasattr(mine, "join"):
            raise ValueError(f"a cache layer of kind {type(mine).__name__} cannot take rows of another batch")
        mine.join(theirs)
    return cache.get_seq_length()


def trim_padding(cache: DynamicCache, attention: torch.Tensor) -> torch.Tensor:
    """Under continuous batching the batch never empties, so without this its width only grows: rows that
    join are left-padded to the widest row's length, and the columns of rows long gone stay as padding
    that every later step attends over. Drops the leading columns that no row attends to from `cache` (a
    joinable one) once they are a quarter of it, and returns `attention` without them."""
    unattended = int((attention.sum(0) == 0).long().cumprod(0).sum())
    if unattended < max(16, attention.shape[1] // 4):
        return attention
    for layer in cache.layers:
        layer.trim(unattended)
    return attention[:, unattended:]


def growing_cache(model) -> DynamicCache:
    """The model's DynamicCache, its full-attention layers growing in place (sliding-window and other layer
    kinds a checkpoint's config asks for are kept as transformers builds them)."""
    cache = DynamicCache(config=model.config)
    cache.layers = [_GrowingLayer() if type(layer) is DynamicLayer else layer for layer in cache.layers]
    if cache.layer_class_to_replicate is DynamicLayer:
        cache.layer_class_to_replicate = _GrowingLayer
    return cache
