"""Training-step time of the tiny student on packed trace rows: transformers' sdpa over a block-diagonal
mask against cogcore's per-trace attention (distill/attention.py), each with and without bf16 autocast;
first, the CPU attention kernel alone on one trace of each length, in bf16 and fp32 (why per-trace
attention runs in fp32).

    .venv/bin/python benchmarks/packed_attention.py --run-dir runs/demo --heads 4 8

Rows are packed exactly as the trainer packs them (`distill.seq_len`, 10% copy drills) from the run's
traces, with its student's tokenizer. A step here is one forward and backward of one micro-batch of rows
with the cross-entropy of the traces; the median of `--steps` steps is reported after 3 warm-up steps.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf
from transformers import AutoTokenizer

from cogcore.core.tools import SEARCH_TOOL
from cogcore.core.trace import read_traces
from cogcore.distill.attention import use_packed_attention
from cogcore.distill.packing import pack_traces
from cogcore.distill.student import build_student

CONF = Path(__file__).resolve().parents[1] / "conf"


def step_seconds(model, rows, micro_batch: int, steps: int, bf16: bool) -> float:
    times = []
    for i in range(steps + 3):
        sl = slice(i * micro_batch, (i + 1) * micro_batch)
        ids, positions, mask = rows.input_ids[sl], rows.position_ids[sl], rows.loss_mask[sl]
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(input_ids=ids, position_ids=positions, use_cache=False).logits
        losses = torch.nn.functional.cross_entropy(
            logits[:, :-1].float().flatten(0, 1), ids[:, 1:].flatten(), reduction="none"
        )
        (losses * mask[:, 1:].flatten()).sum().backward()
        model.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times[3:])


def causal_sdpa(q, k, v):
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)


def kernel_ms(
    length: int,
    dtype: torch.dtype,
    heads: int = 4,
    dim: int = 32,
    repeats: int = 30,
    fn=causal_sdpa,
    batch: int = 1,
    warmup: int = 0,
) -> float:
    """Median ms of one forward + backward of the attention `fn` (causal sdpa: the attention of one packed
    trace) on [batch, heads, length, dim], over `repeats` calls after `warmup` untimed ones."""
    q, k, v = (torch.randn(batch, heads, length, dim, dtype=dtype, requires_grad=True) for _ in range(3))
    times = []
    for _ in range(warmup + repeats):
        started = time.perf_counter()
        fn(q, k, v).sum().backward()
        times.append(time.perf_counter() - started)
    return 1e3 * statistics.median(times[warmup:])


def packed_rows(run_dir: Path, dcfg, limit: int | None = None, every_drill: bool = False):
    """The run's student tokenizer, and its first `limit` traces packed as the trainer packs them: with
    the config's copy drills, and with `every_drill` its record and step drills too."""
    tokenizer = AutoTokenizer.from_pretrained(run_dir / "student")
    traces = list(read_traces(run_dir / "traces" / "traces.jsonl"))[:limit]
    if not every_drill:
        dcfg = OmegaConf.merge(dcfg, {"step_drills": 0.0, "copy_drills": {"records": 0.0}})
    return tokenizer, pack_traces(tokenizer, traces, [SEARCH_TOOL], dcfg)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, default=Path("runs/demo"))
    parser.add_argument("--heads", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print("| trace length | causal sdpa fwd+bwd, bf16 (ms) | fp32 (ms) |")
    print("| --- | --- | --- |")
    for length in (64, 128, 400, 1024):
        bf16, fp32 = kernel_ms(length, torch.bfloat16), kernel_ms(length, torch.float32)
        print(f"| {length} | {bf16:.2f} | {fp32:.2f} |")
    dcfg = OmegaConf.load(CONF / "distill" / "sft.yaml")
    tokenizer, rows = packed_rows(args.run_dir, dcfg)
    print(
        f"{len(rows)} rows of {dcfg.seq_len} tokens, micro-batch {dcfg.micro_batch}, {args.threads} threads"
    )
    print("| heads | precision | sdpa, block-diagonal mask (s/step) | per-trace (s/step) | speed-up |")
    print("| --- | --- | --- | --- | --- |")
    for heads in args.heads:
        scfg = OmegaConf.load(CONF / "student" / "tiny.yaml")
        scfg.arch.num_attention_heads = scfg.arch.num_key_value_heads = heads
        model = build_student(scfg, tokenizer).train()
        for bf16 in (True, False):
            use_packed_attention(model, False)
            sdpa = step_seconds(model, rows, dcfg.micro_batch, args.steps, bf16)
            use_packed_attention(model, True)
            packed = step_seconds(model, rows, dcfg.micro_batch, args.steps, bf16)
            name = "bf16 autocast" if bf16 else "fp32"
            print(f"| {heads} | {name} | {sdpa:.3f} | {packed:.3f} | {sdpa / packed:.2f}x |")


if __name__ == "__main__":
    main()
