"""Attention over packed rows, one trace at a time.

transformers turns packed rows (position_ids restarting at 0, no attention mask) into a block-diagonal
causal mask for sdpa. On CPU the fused kernel then computes every query against every key of the whole
row and masks most of the products away, and for the tiny student that attention is two thirds of a
training step. `packed_sdpa` cuts each row at its position restarts and runs sdpa with `is_causal=True`
on each trace alone, in fp32: the same result, and 1.4x (4 heads) to 1.7x (8 heads) faster steps under
bf16 autocast (BENCHMARKS.md, "Packed attention"). On CPU that loop is one custom operator calling the
fused kernel per trace (`torch.ops.cogcore.packed_attention`), with its own backward.

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
    position_ids = position_ids.expand(query.shape[0], -1)
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    if query.device.type == "cpu" and dropout == 0.0:
        groups = query.shape[1] // key.shape[1]
        if groups > 1:  # the CPU kernel has no GQA: repeat the kv heads (autograd sums their gradients)
            key, value = key.repeat_interleave(groups, 1), value.repeat_interleave(groups, 1)
        out, _ = torch.ops.cogcore.packed_attention(query, key, value, position_ids, scale)
        return out.to(value.dtype).transpose(1, 2).contiguous(), None
    gqa = query.shape[1] != key.shape[1]
    rows = []
    # torch.split, not slicing: the backward of a slice scatters into a zeroed tensor of the whole row.
    for q, k, v, row in zip(
        query.split(1), key.split(1), value.split(1), trace_bounds(position_ids), strict=True
    ):
        lengths = [e - s for s, e in row]
        parts = [
            F.scaled_dot_product_attention(
                q_, k_, v_, dropout_p=dropout, is_causal=True, scale=scale, enable_gqa=gqa
            )
            for q_, k_, v_ in zip(q.split(lengths, 2), k.split(lengths, 2), v.split(lengths, 2), strict=True)
        ]
        rows.append(torch.cat(parts, dim=2) if len(parts) > 1 else parts[0])
    return torch.cat(rows, dim=0).transpose(1, 2).contiguous(), None


def _spans(position_ids: torch.Tensor) -> list[tuple[int, int, int]]:
    return [(r, s, e) for r, row in enumerate(trace_bounds(position_ids)) for s, e in row]


# The CPU path is one opaque operator (and one for its backward) around the fused flash kernel, called per
# trace: autograd records one node per layer instead of a split, a kernel and a cat per trace, and
# torch.compile sees a fixed-shape op instead of recompiling for every row's trace lengths. Attention runs
# in fp32 even under bf16 autocast: there the kernel's bf16 backward is several times slower on short
# traces (benchmarks/packed_attention.py). The kernel's log-sum-exp is kept for the backward, so nothing
# is recomputed.
@torch.library.custom_op("cogcore::packed_attention", mutates_args=())
def _packed_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, position_ids: torch.Tensor, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    out = q.new_empty(q.shape, dtype=torch.float32)
    lse = q.new_empty(q.shape[:3], dtype=torch.float32)
    for r, s, e in _spans(position_ids):
        part = (t[r : r + 1, :, s:e].float() for t in (q, k, v))
        out[r : r + 1, :, s:e], lse[r : r + 1, :, s:e] = (
            torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(*part, 0.0, True, scale=scale)
        )
    return out, lse


@_packed_attention.register_fake
def _(q, k, v, position_ids, scale):
    return q.new_empty(q.shape, dtype=torch.float32), q.new_empty(q.shape[:3], dtype=torch.float32)


@torch.library.custom_op("cogcore::packed_attention_backward", mutates_args=())
def _packed_attention_backward(
    grad: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    position_ids: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    grads = [torch.zeros_like(t, dtype=torch.float32) for t in (q, k, v)]
    for r, s, e in _spans(position_ids):
        parts = (t[r : r + 1, :, s:e].float() for t in (grad, q, k, v))
        trace = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
            *parts, out[r : r + 1, :, s:e], lse[r : r + 1, :, s:e], 0.0, True, scale=scale
        )
        for whole, part in zip(grads, trace, strict=True):
            whole[r : r + 1, :, s:e] = part
    return tuple(g.to(t.dtype) for g, t in zip(grads, (q, k, v), strict=True))


@_packed_attention_backward.register_fake
def _(grad, q, k, v, position_ids, out, lse, scale):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _save(ctx, inputs, output) -> None:
    q, k, v, position_ids, ctx.scale = inputs
    ctx.save_for_backward(q, k, v, position_ids, *output)


def _backward(ctx, grad_out, grad_lse):
    q, k, v, position_ids, out, lse = ctx.saved_tensors
    return (*_packed_attention_backward(grad_out, q, k, v, position_ids, out, lse, ctx.scale), None, None)


_packed_attention.register_autograd(_backward, setup_context=_save)


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
