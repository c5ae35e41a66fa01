"""Which instruction set the tiny student's matrix products run on: GFLOP/s of its linear layers' shapes
(2 rows of 1,024 tokens, hidden 128, MLP 384, vocabulary 1,024) in fp32, as torch's BLAS (MKL on x86
wheels) computes them.

`ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2` holds torch's own kernels and oneDNN to AVX2, but not
MKL, which picks its own code path: on an AVX-512 machine its sgemm still runs AVX-512 unless
`MKL_ENABLE_INSTRUCTIONS=AVX2` is set too. Compare:

    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 .venv/bin/python benchmarks/matmul_isa.py
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 \\
        .venv/bin/python benchmarks/matmul_isa.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

SHAPES = {  # (tokens, in, out) of each linear layer of conf/student/tiny.yaml on a step's 2,048 tokens
    "q/k/v/o projection": (2048, 128, 128),
    "MLP gate/up": (2048, 128, 384),
    "MLP down": (2048, 384, 128),
    "LM head": (2048, 128, 1024),
}
ISA_VARIABLES = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")


def gflops(tokens: int, fan_in: int, fan_out: int, repeats: int) -> float:
    """GFLOP/s of `tokens x fan_in @ fan_in x fan_out` in fp32, the median of 5 timings of `repeats`."""
    a, b = torch.randn(tokens, fan_in), torch.randn(fan_in, fan_out)
    for _ in range(10):
        a @ b
    seconds = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(repeats):
            a @ b
        seconds.append((time.perf_counter() - started) / repeats)
    return 2 * tokens * fan_in * fan_out / statistics.median(seconds) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=100)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    held = ", ".join(f"{name}={os.environ.get(name, '(unset)')}" for name in ISA_VARIABLES)
    print(f"torch CPU capability {torch.backends.cpu.get_cpu_capability()}; {held}; {args.threads} threads")
    print("| layer | shape | GFLOP/s |")
    print("| --- | --- | --- |")
    for name, shape in SHAPES.items():
        print(f"| {name} | {' x '.join(map(str, shape))} | {gflops(*shape, args.repeats):.0f} |")


if __name__ == "__main__":
    main()
