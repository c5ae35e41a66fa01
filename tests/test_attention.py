"""Per-trace attention over packed rows (distill/attention.py) against transformers' own packing."""

import pytest
import torch
from conftest import make_cfg
from tiny_chat import TRACES, tiny_llama, tiny_tokenizer

from cogcore.core.tools import SEARCH_TOOL
from cogcore.distill.attention import NAME, trace_bounds, use_packed_attention
from cogcore.distill.packing import pack_traces


@pytest.fixture(scope="module")
def rows():
    copies = [f"distill.copy_drills.{key}" for key in ("share=0.2", "min_len=4", "max_len=12", "records=0")]
    dcfg = make_cfg("distill", "unused", "distill.seq_len=400", "distill.step_drills=0", *copies).distill
    return pack_traces(tiny_tokenizer(), TRACES, [SEARCH_TOOL], dcfg)


def test_trace_bounds_cut_at_every_position_restart():
    positions = torch.tensor([[0, 1, 2, 0, 1, 0, 1, 2, 3], [0, 1, 2, 3, 4, 5, 6, 7, 8]])
    assert trace_bounds(positions) == [[(0, 3), (3, 5), (5, 9)], [(0, 9)]]


def _loss_and_grads(model, rows, autocast: bool):
    batch = {"input_ids": rows.input_ids[:3], "position_ids": rows.position_ids[:3]}
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        logits = model(**batch, use_cache=False).logits
    loss = torch.nn.functional.cross_entropy(
        logits[:, :-1].float().flatten(0, 1), batch["input_ids"][:, 1:].flatten(), reduction="sum"
    )
    loss.backward()
    return logits.float(), {n: p.grad.clone() for n, p in model.named_parameters()}


def test_per_trace_attention_gives_the_same_logits_and_gradients(rows):
    """fp32: equal to transformers' block-diagonal sdpa within float error, forward and backward (GQA)."""
    assert len(trace_bounds(rows.position_ids[:3])[0]) > 2  # traces and drills share the rows
    model = tiny_llama(tiny_tokenizer(), num_attention_heads=4, num_key_value_heads=2).train()
    ref_logits, ref_grads = _loss_and_grads(model, rows, autocast=False)
    use_packed_attention(model, True)
    assert model.config._attn_implementation == NAME
    logits, grads = _loss_and_grads(model, rows, autocast=False)
    torch.testing.assert_close(logits, ref_logits, atol=1e-5, rtol=1e-5)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, ref_grads[name], atol=1e-4, rtol=1e-3, msg=name)


def test_per_trace_attention_under_bf16_autocast_stays_within_bf16_error(rows):
    """Under bf16 autocast it attends in fp32; its logits differ from sdpa's by bf16 rounding only."""
    model = tiny_llama(tiny_tokenizer()).train()
    exact, _ = _loss_and_grads(model, rows, autocast=False)
    sdpa, _ = _loss_and_grads(model, rows, autocast=True)
    use_packed_attention(model, True)
    packed, grads = _loss_and_grads(model, rows, autocast=True)
    bf16_error = (sdpa - exact).abs().max().item()
    assert 0 < bf16_error < 0.05
    torch.testing.assert_close(packed, sdpa, atol=2 * bf16_error, rtol=0)
    assert all(torch.isfinite(g).all() for g in grads.values())


def test_per_trace_attention_refuses_what_is_not_a_packed_training_forward(rows):
    model = tiny_llama(tiny_tokenizer())
    use_packed_attention(model, True)
    ids = rows.input_ids[:1, :16]
    padded = torch.ones_like(ids)
    padded[0, :3] = 0
    with pytest.raises(ValueError, match="attn_implementation='sdpa'"):
        model(input_ids=ids, attention_mask=padded)
    prefill = model(input_ids=ids, use_cache=True)
    with pytest.raises(ValueError, match="packed training forwards only"):
        model(input_ids=ids[:, :1], cache=prefill.cache, use_cache=True)
    use_packed_attention(model, False)
    assert model(input_ids=ids, attention_mask=padded).logits.shape == (1, 16, model.vocab_size)


def test_the_cpu_operator_passes_torch_library_checks(rows):
    """Its fake kernel and autograd registration hold (what torch.compile and AOT autograd rely on), and it
    equals sdpa on each trace alone, forward and backward."""
    positions = rows.position_ids[:2, :96]
    q, k, v = (torch.randn(2, 4, 96, 16, requires_grad=True) for _ in range(3))
    torch.library.opcheck(torch.ops.cogcore.packed_attention, (q, k, v, positions, 0.25))
    out, _ = torch.ops.cogcore.packed_attention(q, k, v, positions, 0.25)
    out.square().sum().backward()
    grads = [t.grad for t in (q, k, v)]
    r, (s, e) = 1, trace_bounds(positions)[1][-1]
    part = [t[r : r + 1, :, s:e].detach().requires_grad_() for t in (q, k, v)]
    ref = torch.nn.functional.scaled_dot_product_attention(*part, is_causal=True, scale=0.25)
    torch.testing.assert_close(out[r : r + 1, :, s:e], ref)
    ref.square().sum().backward()
    for whole, alone in zip(grads, part, strict=True):
        torch.testing.assert_close(whole[r : r + 1, :, s:e], alone.grad)
