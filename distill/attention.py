"""Attention over packed rows, one trace at a time.

transformers turns packed rows (position_ids restarting at 0, no attention mask) into a block-diagonal
causal mask for sdpa. On CPU the fused kernel then computes every query against every key of the whole
row and masks most of the products away, and for the tiny student that attention is two thirds of a
training step. `packed_sdpa` cuts each row at its position restarts and runs sdpa with `is_causal=True`
on each trace alone, in fp32: the same result, and 1.4x (4 heads) to 1.7x (8 heads) faster steps under
bf16 autocast (BENCHMARKS.md, "Packed attention").

Registered with transformers' AttentionInterface as "cogcore_packed", with a mask hook that builds no
mask, so the attention gets the position_ids and cuts the rows itself. Training switches the student
to it (`use_packed_attention`) and saves the checkpoint with sdpa again, so inference, generation with
a cache and padding masks are untouched. Anything that is not a packed training forward (a mask, a
cache, a query shorter than the keys) is refused rather than silently mis-attended.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface

NAME = "cogcore_packed"


def trace_bounds(position_ids: torch.Tensor) -> list[list[tuple[int, int]]]:
    """Per row, the (start, end) of each packed trace: a trace starts where the position is 0."""
    length = position_ids.shape[-1]
    bounds = []
    for row in position_ids:
        starts = (row == 0).nonzero().flatten().tolist()
        if not starts or starts[0] != 0:
            starts = [0, *starts]
        bounds.append(list(zip(starts, [*starts[1:], length], strict=True)))
    return bounds


def packed_sdpa(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    position_ids: torch.Tensor | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """query [batch, heads, len, dim], key/value [batch, kv_heads, len, dim] -> [batch, len, heads, dim]."""
    if attention_mask is not None or position_ids is None or query.shape[2] != key.shape[2]:
        raise ValueError(
            f"{NAME} attention serves packed training forwards only (position_ids, no mask, no cache); "
            "load the checkpoint with attn_implementation='sdpa' for anything else"
        )
    gqa = query.shape[1] != key.shape[1]
    rows = []
    spans = trace_bounds(position_ids.expand(query.shape[0], -1))
    # torch.split, not slicing: the backward of a slice scatters into a zeroed tensor of the whole row.
    for q, k, v, row in zip(query.split(1), key.split(1), value.split(1), spans, strict=True):
        lengths = [e - s for s, e in row]
        parts = [
            _attend(qs, ks, vs, dropout, scaling, gqa)
            for qs, ks, vs in zip(q.split(lengths, 2), k.split(lengths, 2), v.split(lengths, 2), strict=True)
        ]
        rows.append(torch.cat(parts, dim=2) if len(parts) > 1 else parts[0])
    return torch.cat(rows, dim=0).transpose(1, 2).contiguous(), None


def _attend(q, k, v, dropout: float, scaling: float | None, gqa: bool) -> torch.Tensor:
    """Causal attention within one trace. On CPU in float32 even under bf16 autocast: there the fused
    kernel's bf16 backward is several times slower than fp32's on short traces, so cutting rows buys
    little in bf16 (benchmarks/packed_attention.py)."""
    if q.device.type != "cpu":
        return F.scaled_dot_product_attention(
            q, k, v, dropout_p=dropout, is_causal=True, scale=scaling, enable_gqa=gqa
        )
    with torch.autocast("cpu", enabled=False):
        out = F.scaled_dot_product_attention(
            q.float(), k.float(), v.float(), dropout_p=dropout, is_causal=True, scale=scaling, enable_gqa=gqa
        )
    return out.to(v.dtype)


def _padding_mask_only(attention_mask: torch.Tensor | None = None, **kwargs) -> torch.Tensor | None:
    """transformers' mask hook: no mask to build (the attention cuts rows itself), but a padding mask that
    hides anything is handed on, so that the attention refuses it instead of attending past it."""
    if attention_mask is not None and not bool(attention_mask.all()):
        return attention_mask
    return None


AttentionInterface.register(NAME, packed_sdpa)
AttentionMaskInterface.register(NAME, _padding_mask_only)


def use_packed_attention(model: torch.nn.Module, on: bool) -> None:
    """Switch a transformers model to per-trace attention (training), or from it back to sdpa."""
    if on:
        model.set_attn_implementation(NAME)
    elif model.config._attn_implementation == NAME:
        model.set_attn_implementation("sdpa")
