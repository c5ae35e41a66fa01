"""Picking the next token from a step's logits, as the generation config says: greedy, or sampled at a
temperature with optional top-k and top-p filters, from one seeded generator per generation call."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from cogcore.core.generation import GenerationConfig


class Sampler:
    def __init__(self, cfg: GenerationConfig):
        self.cfg = cfg
        self.greedy = cfg.temperature <= 0
        self.generator = torch.Generator(device="cpu").manual_seed(cfg.seed)

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        """One token id per row of `logits` (rows, vocab)."""
        cfg = self.cfg
        if self.greedy:
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
        return torch.multinomial(logits.softmax(-1), 1, generator=self.generator).squeeze(-1)
