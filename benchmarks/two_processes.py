"""Why two one-thread processes train the tiny student faster apart than together, on 2 CPU cores.

Two independent one-thread training runs side by side make more tokens/s than one two-thread run, and
DDP over two one-thread processes makes fewer. This runs the trainer's step (forward and backward of
one packed row, clipping, AdamW) in two one-thread processes, four ways:

- `apart`: no communication at all, each process trains on its own rows;
- `barrier`: the same, but both wait for each other once a step (no gradients exchanged);
- `allreduce`: the gradients summed with one all-reduce of a flat buffer after the backward;
- `ddp`: torch's DistributedDataParallel (gloo), as `accelerate launch` would run it (its all-reduce
  runs inside the backward, so it counts in the forward+backward);

and, for reference, one process of two threads taking both rows in one step (what `cogcore distill`
does on 2 cores). With `--row-costs`, first one one-thread process times rows one by one: how much a
step that waits for the slower of two rows loses to their spread. Per mode: the mean forward+backward
time per process, the mean wait in the barrier or all-reduce, and the tokens/s of both together.

    .venv/bin/python benchmarks/two_processes.py --run-dir runs/demo --steps 100
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 \\
        .venv/bin/python benchmarks/two_processes.py   # AVX2, fp32

Rows are packed as the trainer packs them (the default `distill` config's drills) from the first
`--traces` traces of the run, with its student's tokenizer; the student is built fresh from
`conf/student/tiny.yaml`, in fp32.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from omegaconf import OmegaConf
from packed_attention import packed_rows

from cogcore.distill.attention import use_packed_attention
from cogcore.distill.student import build_student
from cogcore.distill.train import _batch, optimizer_for, step_loss

CONF = Path(__file__).resolve().parents[1] / "conf"
MODES = ("apart", "barrier", "allreduce", "ddp")


def trainer(run_dir: Path, traces: int, threads: int, ddp: bool = False):
    torch.set_num_threads(threads)
    dcfg = OmegaConf.load(CONF / "distill" / "sft.yaml")
    tokenizer, rows = packed_rows(run_dir, dcfg, traces, every_drill=True)
    model = build_student(OmegaConf.load(CONF / "student" / "tiny.yaml"), tokenizer)
    use_packed_attention(model, True)
    model.train()
    if ddp:
        model = torch.nn.parallel.DistributedDataParallel(model)
    return dcfg, rows, model, optimizer_for(model, dcfg)


def timed_steps(dcfg, rows, model, optimizer, indices, steps: int, exchange=None) -> dict:
    """Mean seconds of forward+backward and of `exchange` per step, and the wall time of `steps` steps
    after 3 warm-up steps; step i trains on rows indices(i)."""
    params = list(model.parameters())
    compute, waits = [], []
    for i in range(steps + 3):
        if i == 3:
            if dist.is_initialized():
                dist.barrier()
            started = time.perf_counter()
        t0 = time.perf_counter()
        loss, count = step_loss(model, None, _batch(rows, indices(i), "cpu"), dcfg)
        (loss / count).backward()
        t1 = time.perf_counter()
        if exchange is not None:
            exchange(params)
        t2 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if i >= 3:
            compute.append(t1 - t0)
            waits.append(t2 - t1)
    return {
        "computes": compute,
        "compute": statistics.mean(compute),
        "wait": statistics.mean(waits),
        "wall": time.perf_counter() - started,
    }


def all_reduce(params) -> None:
    flat = torch.cat([p.grad.flatten() for p in params])
    dist.all_reduce(flat)
    offset = 0
    for p in params:
        p.grad.copy_(flat[offset : offset + p.numel()].view_as(p))
        offset += p.numel()


def worker(rank: int, mode: str, address: str, args, results) -> None:
    dist.init_process_group("gloo", init_method=address, rank=rank, world_size=2)
    dcfg, rows, model, optimizer = trainer(args.run_dir, args.traces, 1, ddp=mode == "ddp")
    exchange = {"barrier": lambda _: dist.barrier(), "allreduce": all_reduce}.get(mode)
    results[rank] = timed_steps(dcfg, rows, model, optimizer, lambda i: [2 * i + rank], args.steps, exchange)
    dist.destroy_process_group()


def free_address() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def row_costs(args) -> None:
    """One one-thread process, one row a step: the spread of the rows' step times, and the mean of the
    slower of each pair against the mean (what a synchronous two-process step waits for)."""
    dcfg, rows, model, optimizer = trainer(args.run_dir, args.traces, 1)
    times = timed_steps(dcfg, rows, model, optimizer, lambda i: [i], args.steps)["computes"]
    mean = statistics.mean(times)
    slower = statistics.mean(max(times[i], times[i + 1]) for i in range(0, len(times) - 1, 2))
    spread = f"{min(times) * 1e3:.1f} to {max(times) * 1e3:.1f}"
    print(
        f"{len(times)} rows one by one, 1 thread: forward+backward {mean * 1e3:.1f} ms, standard deviation "
        f"{statistics.stdev(times) * 1e3:.1f} ms ({spread}); the slower of each pair {slower * 1e3:.1f} ms, "
        f"+{slower / mean - 1:.1%}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, default=Path("runs/demo"))
    parser.add_argument("--traces", type=int, default=1200)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--row-costs", action="store_true")
    args = parser.parse_args()
    if args.row_costs:
        row_costs(args)
    tokens = 2 * OmegaConf.load(CONF / "distill" / "sft.yaml").seq_len * args.steps

    capability = torch.backends.cpu.get_cpu_capability()
    print(f"torch {torch.__version__}, CPU capability {capability}, {args.steps} steps")
    print("| run | forward+backward per process (ms) | wait a step (ms) | tokens/s, both rows |")
    print("| --- | --- | --- | --- |")
    one = timed_steps(*trainer(args.run_dir, args.traces, 2), lambda i: [2 * i, 2 * i + 1], args.steps)
    compute = f"{one['compute'] * 1e3:.1f}"
    print(f"| one process, 2 threads, 2 rows a step | {compute} | - | {tokens / one['wall']:,.0f} |")
    with mp.Manager() as manager:  # one server process for every mode's results
        for mode in args.modes:
            results = manager.dict()
            mp.spawn(worker, args=(mode, free_address(), args, results), nprocs=2)
            compute = " / ".join(f"{results[r]['compute'] * 1e3:.1f}" for r in range(2))
            wait = " / ".join(f"{results[r]['wait'] * 1e3:.1f}" for r in range(2))
            wall = max(results[r]["wall"] for r in range(2))
            print(f"| two processes, 1 thread, `{mode}` | {compute} | {wait} | {tokens / wall:,.0f} |")


if __name__ == "__main__":
    main()
