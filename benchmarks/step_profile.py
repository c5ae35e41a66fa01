"""Where a training step of the tiny student goes: one full step as the trainer takes it (forward and
backward of one micro-batch of packed trace rows in bf16 autocast or fp32 (as `distill.precision`),
per-trace attention, clipping, AdamW), its median time, and torch.profiler's table of the operators that
take the time. With `--kernels`, the causal attention of one trace alone (8 heads of 16, forward and
backward) by the kernels one could use instead: the CPU flash kernel in fp32 (what
`distill/attention.py` runs) and in bf16, sdpa's math backend, and a plain matmul-softmax-matmul in fp32
and bf16; then the flash kernel on a batch of equal-length traces against one call per trace.

    .venv/bin/python benchmarks/step_profile.py --run-dir runs/demo --kernels
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 \\
        .venv/bin/python benchmarks/step_profile.py  # AVX2, fp32

(Without `MKL_ENABLE_INSTRUCTIONS=AVX2` an AVX-512 machine still runs the matrix products in AVX-512:
benchmarks/matmul_isa.py.)

`--precision auto` (the default) picks what `distill.precision=auto` would on this CPU; `--compile` runs
the student under torch.compile, as `distill.compile=true` does.

Rows are packed as the trainer packs them (the default `distill` config's drills) from the first
`--traces` traces of the run, with its student's tokenizer; the student is built fresh from
`conf/student/tiny.yaml`.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf
from packed_attention import causal_sdpa, kernel_ms, packed_rows
from torch.nn.attention import SDPBackend, sdpa_kernel

from cogcore.distill.attention import use_packed_attention
from cogcore.distill.student import build_student
from cogcore.distill.train import _batch, optimizer_for, precision, step_loss

CONF = Path(__file__).resolve().parents[1] / "conf"


def math_backend(q, k, v):
    with sdpa_kernel(SDPBackend.MATH):
        return causal_sdpa(q, k, v)


def matmul_softmax(q, k, v):
    scores = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
    future = torch.ones(q.shape[2], q.shape[2], dtype=torch.bool).triu(1)
    return scores.masked_fill(future, float("-inf")).softmax(-1) @ v


def attention_ms(fn, length: int, dtype: torch.dtype, batch: int = 1) -> float:
    """Median ms of one forward + backward of `fn` on [batch, 8 heads, length, 16], as the student's."""
    return kernel_ms(length, dtype, heads=8, dim=16, fn=fn, batch=batch, warmup=3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, default=Path("runs/demo"))
    parser.add_argument("--traces", type=int, default=600)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--kernels", action="store_true")
    parser.add_argument("--compile", action="store_true", help="torch.compile the student (distill.compile)")
    parser.add_argument(
        "--precision", choices=["auto", "bf16", "no"], default="auto", help="as distill.precision (no: fp32)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    dcfg = OmegaConf.load(CONF / "distill" / "sft.yaml")
    tokenizer, rows = packed_rows(args.run_dir, dcfg, args.traces, every_drill=True)
    model = build_student(OmegaConf.load(CONF / "student" / "tiny.yaml"), tokenizer)
    use_packed_attention(model, True)
    model.train()
    optimizer = optimizer_for(model, dcfg)
    per_step = dcfg.micro_batch

    bf16 = precision(OmegaConf.create({"precision": args.precision})) == "bf16"
    capability = torch.backends.cpu.get_cpu_capability()
    print(f"{'bf16 autocast' if bf16 else 'fp32'}, torch CPU capability {capability}")

    forward = torch.compile(model) if args.compile else model

    def step(i: int) -> None:
        batch = _batch(rows, list(range(per_step * i, per_step * (i + 1))), "cpu")
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            summed, tokens = step_loss(forward, None, batch, dcfg)
            (summed / tokens).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), dcfg.clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    n_batches = len(rows) // per_step
    started = time.perf_counter()
    for i in range(3):
        step(i)
    print(f"first 3 steps{' (compiling)' if args.compile else ''}: {time.perf_counter() - started:.1f} s")
    times = []
    for i in range(args.steps):
        started = time.perf_counter()
        step(i % n_batches)
        times.append(time.perf_counter() - started)
    print(f"median step: {1e3 * statistics.median(times):.1f} ms ({per_step} rows of {dcfg.seq_len} tokens)")
    with torch.profiler.profile() as profile:
        for i in range(10):
            step(i % n_batches)
    print(profile.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))

    if args.kernels:
        print("| trace length | flash fp32 | flash bf16 | math fp32 | matmul fp32 | matmul bf16 |  (ms)")
        print("| --- | --- | --- | --- | --- | --- |")
        for length in (64, 128, 200, 400, 1024):
            cells = [
                attention_ms(causal_sdpa, length, torch.float32),
                attention_ms(causal_sdpa, length, torch.bfloat16),
                attention_ms(math_backend, length, torch.float32),
                attention_ms(matmul_softmax, length, torch.float32),
                attention_ms(matmul_softmax, length, torch.bfloat16),
            ]
            print(f"| {length} | " + " | ".join(f"{c:.2f}" for c in cells) + " |")
        print("| traces x length | one batched call (ms) | one call per trace (ms) |")
        print("| --- | --- | --- |")
        for batch in (2, 5):
            for length in (128, 200):
                together = attention_ms(causal_sdpa, length, torch.float32, batch)
                apart = batch * attention_ms(causal_sdpa, length, torch.float32)
                print(f"| {batch} x {length} | {together:.2f} | {apart:.2f} |")


if __name__ == "__main__":
    main()
