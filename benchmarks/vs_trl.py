"""Distillation throughput against TRL: cogcore's trainer and TRL's `SFTTrainer` train the same fresh tiny
student on the same traces for the same number of steps, and one function scores both final models.

    pip install -e '.[bench]'          # trl, for this benchmark only (not a cogcore dependency)
    flock /work/heavy.lock .venv/bin/python benchmarks/vs_trl.py --run-dir runs/demo --steps 300
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 \\
        .venv/bin/python benchmarks/vs_trl.py --run-dir runs/demo --precision no   # the AVX2 fp32 path

Both sides get what a user of each would run, on equal terms:
- the student: `conf/student/tiny.yaml` built by `build_student` with its init seed, from the run's
  `student/` tokenizer (so the same vocabulary and the same initial weights);
- the data: the run's traces minus the held-out share `split_traces` keeps out, rendered by the same chat
  template with the `search` tool, assistant tokens trained (cogcore's template marks them with
  `{% generation %}`), traces longer than `seq_len` left out as cogcore's packer leaves them out. The
  benchmark checks that the sequences TRL packs are token for token the ones cogcore encodes;
- the batch: 2 packed rows of up to 1,024 tokens per optimizer step. cogcore: `cogcore distill` itself
  (`distill(cfg)`), with the copy warm-up, copy drills and step drills off so it sees only the traces, no
  weight average (`distill.ema=null`: TRL has none, so both save the last weights), per-trace attention
  (its CPU default). TRL: `packing=True, packing_strategy="bfd", padding_free=True,
  assistant_only_loss=True, max_length=1024, per_device_train_batch_size=2`, sdpa attention;
- the optimizer: cogcore's AdamW groups and schedule (`optimizer_for`, `scheduler_for`: lr 3e-3, betas
  (0.9, 0.95), weight decay 0.1 on matrices, 100 warm-up steps, cosine to 0.1x), clipping at 1.0;
- the precision: `--precision auto` is cogcore's `distill.precision=auto` (bf16 autocast on a CPU with AMX
  or AVX-512 bf16, else fp32), and TRL gets the same (`bf16=True` or not); `--precision no` is fp32 for
  both.

Reported per side: the training loop's wall time for `--steps` steps (first step to last, without model
building, tokenising or saving) and its median step, trace tokens/s (every token of the packed traces, no
padding: what both sides must push through the model) over the loop and over `--steps` median steps (which
a pause of the process on a shared machine does not move), row tokens/s (cogcore's rows are 1,024 tokens
with a pad tail; TRL's padding-free rows have none), trained tokens/s (assistant tokens with a loss), the
training loss (mean of the last 10 steps, as TRL logs it) and the held-out loss: cross-entropy per
assistant token of the held-out traces, each run alone, unpacked, in fp32, by the one function
`heldout_ce` on both final models. The ratio is cogcore's trace tokens/s over TRL's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import datasets
import torch
from accelerate.state import AcceleratorState
from hydra import compose, initialize_config_module
from omegaconf import DictConfig, OmegaConf
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

from cogcore.core.chat import chat_messages
from cogcore.core.trace import read_traces
from cogcore.distill.packing import encode_trace
from cogcore.distill.student import build_student
from cogcore.distill.train import (
    TOOLS,
    batch_rows,
    distill,
    optimizer_for,
    precision,
    scheduler_for,
    split_traces,
    trace_phase,
)

CONF = Path(__file__).resolve().parents[1] / "conf"


def cogcore_cfg(run_dir: Path, steps: int, precision_: str) -> DictConfig:
    """`cogcore distill` on the traces alone: no drills, no weight average, no checkpoint before the end."""
    overrides = [
        f"run_dir={run_dir}",
        f"distill.max_steps={steps}",
        "distill.copy_drills.warmup_steps=0",
        "distill.copy_drills.share=0",
        "distill.step_drills=0",
        "distill.ema=null",
        f"distill.precision={precision_}",
        f"distill.eval_every={10 * steps}",  # the held-out loss only at the end, after the loop's timing
        f"distill.ckpt_every={10 * steps}",
        "distill.log_every=1",  # every step, for the mean loss of the last 10
    ]
    with initialize_config_module("cogcore.conf", version_base=None):
        return compose(config_name="distill", overrides=overrides)


@torch.no_grad()
def heldout_ce(model, examples: list[tuple[list[int], list[int]]]) -> float:
    """Cross-entropy per assistant token of each (input_ids, loss_mask) example run alone, in fp32, with
    sdpa: the same measure whichever trainer made `model`."""
    model.eval()
    total, count = 0.0, 0
    for ids, mask in examples:
        ids_t = torch.tensor([ids])
        logits = model(input_ids=ids_t, use_cache=False).logits[0, :-1].float()
        trained = torch.tensor(mask[1:], dtype=torch.bool)
        losses = torch.nn.functional.cross_entropy(logits, ids_t[0, 1:], reduction="none")
        total += float(losses[trained].sum())
        count += int(trained.sum())
    return total / count


def run_cogcore(source: Path, work: Path, steps: int, precision_: str, heldout) -> dict:
    """`distill(cfg)` in a scratch run dir that links the run's traces and reuses its tokenizer."""
    run_dir = work / "cogcore"
    (run_dir / "traces").mkdir(parents=True)
    os.symlink(source / "traces" / "traces.jsonl", run_dir / "traces" / "traces.jsonl")
    tok_dir = run_dir / "student" / "checkpoints" / "tokenizer"  # where a resumed run finds its tokenizer
    AutoTokenizer.from_pretrained(source / "student").save_pretrained(tok_dir)
    cfg = cogcore_cfg(run_dir, steps, precision_)

    started = time.perf_counter()
    distill(cfg)
    total = time.perf_counter() - started
    records = [json.loads(line) for line in (run_dir / "student" / "metrics.jsonl").read_text().splitlines()]

    # The rows the loop trained on, rebuilt as `distill` builds them (a pure function of the config), to
    # count their tokens. The pad id (<|pad|>, 0) never occurs in a trace.
    tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    traces = list(read_traces(source / "traces" / "traces.jsonl"))
    train, _ = split_traces(traces, cfg.distill.heldout_share, cfg.distill.seed)
    rows = trace_phase(cfg.distill, tokenizer, train).rows
    dcfg = cfg.distill
    used = [i for s in range(steps) for i in batch_rows(s, len(rows), dcfg.global_batch, dcfg.seed)]
    row_tokens = rows.input_ids[used].numel()
    # The trainer's own rate of every step is row tokens so far over loop time so far.
    ends = [r["step"] * row_tokens / steps / r["tokens_per_s"] for r in records]
    model = AutoModelForCausalLM.from_pretrained(run_dir / "student", dtype=torch.float32)
    return {
        "seconds": ends[-1],
        "step_seconds": step_times(ends),
        "total_seconds": total,
        "row_tokens": row_tokens,
        "trace_tokens": int((rows.input_ids[used] != tokenizer.pad_token_id).sum()),
        "trained_tokens": int(rows.loss_mask[used][:, 1:].sum()),
        "train_loss": sum(r["loss"] for r in records[-10:]) / len(records[-10:]),  # as TRL logs it
        "heldout": heldout_ce(model, heldout),
    }


class Counting:
    """TRL's own collator, counting what each batch holds. Batches are made in training order (the
    dataloader may make one ahead), so the first `steps` counts are those of the steps trained."""

    def __init__(self, collator):
        self.collator, self.counts = collator, []

    def __call__(self, examples):
        batch = self.collator(examples)
        self.counts.append((batch["input_ids"].numel(), int((batch["labels"] != -100).sum())))
        return batch


def step_times(ends: list[float]) -> list[float]:
    """Each step's seconds, from the loop times at which steps 1, 2, ... ended."""
    return [b - a for a, b in zip([0.0, *ends], ends, strict=False)]


class LoopClock(TrainerCallback):
    """The loop time, from the start of training, at which each step ends."""

    def __init__(self):
        self.started, self.ends = None, []

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.ends.append(time.perf_counter() - self.started)


def trl_trainer(source: Path, work: Path, steps: int, bf16: bool, dcfg, train, encoded, callbacks=()):
    """TRL's SFTTrainer on the fresh student and the traces that fit a row, checked to hold the sequences
    cogcore encodes."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    tokenizer = AutoTokenizer.from_pretrained(source / "student")
    model = build_student(OmegaConf.load(CONF / "student" / "tiny.yaml"), tokenizer)
    fits = [t for t, (ids, _) in zip(train, encoded, strict=True) if len(ids) <= dcfg.seq_len]
    data = Dataset.from_list(
        [{"messages": chat_messages(tokenizer, t["messages"]), "tools": json.dumps(TOOLS)} for t in fits]
    )
    args = SFTConfig(
        output_dir=str(work / "trl"),
        max_steps=steps,
        per_device_train_batch_size=dcfg.global_batch,
        gradient_accumulation_steps=1,
        max_length=dcfg.seq_len,
        packing=True,
        packing_strategy="bfd",
        padding_free=True,
        assistant_only_loss=True,
        max_grad_norm=dcfg.clip,
        learning_rate=dcfg.lr,  # the optimizer below is the one used; these say the same for the logs
        weight_decay=dcfg.weight_decay,
        warmup_steps=dcfg.warmup_steps,
        bf16=bf16,
        use_cpu=True,
        seed=dcfg.seed,
        logging_steps=10,
        save_strategy="no",
        report_to="none",
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    optimizer = optimizer_for(model, dcfg)
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=data,
        processing_class=tokenizer,
        optimizers=(optimizer, scheduler_for(optimizer, dcfg, steps)),
        callbacks=list(callbacks),
    )
    check_same_sequences(trainer.train_dataset, [e for e in encoded if len(e[0]) <= dcfg.seq_len])
    return trainer


def run_trl(source: Path, work: Path, steps: int, bf16: bool, dcfg, train, encoded, heldout) -> dict:
    clock = LoopClock()
    trainer = trl_trainer(source, work, steps, bf16, dcfg, train, encoded, [clock])
    counting = trainer.data_collator = Counting(trainer.data_collator)
    started = time.perf_counter()
    trainer.train()
    total = time.perf_counter() - started
    counts = counting.counts[:steps]
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]  # mean of each 10 steps
    return {
        "seconds": clock.ends[-1],
        "step_seconds": step_times(clock.ends),
        "total_seconds": total,
        "row_tokens": sum(n for n, _ in counts),  # padding-free: a batch is its packed traces, no pad
        "trace_tokens": sum(n for n, _ in counts),
        "trained_tokens": sum(k for _, k in counts),
        "train_loss": losses[-1] if losses else trainer.state.log_history[-1]["train_loss"],
        "heldout": heldout_ce(trainer.model, heldout),
    }


def check_same_sequences(packed, encoded: list[tuple[list[int], list[int]]]) -> None:
    """TRL's packed rows, cut at their sequence lengths, hold exactly the sequences cogcore encodes, with
    the same trained tokens: both sides train on the same tokens, only packed and ordered their own way."""
    theirs = []
    for row in packed:
        start = 0
        for n in row["seq_lengths"]:
            ids, labels = row["input_ids"][start : start + n], row["labels"][start : start + n]
            theirs.append((tuple(ids), tuple(int(label != -100) for label in labels)))
            start += n
    ours = [(tuple(ids), tuple(mask)) for ids, mask in encoded]
    if sorted(theirs) != sorted(ours):
        raise SystemExit(
            f"TRL's sequences ({len(theirs)}, {sum(len(i) for i, _ in theirs)} tokens) differ from cogcore's "
            f"({len(ours)}, {sum(len(i) for i, _ in ours)} tokens): the comparison would not be fair"
        )


def table(rows: dict[str, dict], steps: int, machine: str) -> str:
    """Rates over the loop's wall time, and (the machine being shared) over `steps` times the median step,
    which a pause of the process does not move."""
    lines = [
        f"{steps} steps of 2 packed rows of up to 1,024 tokens; {machine}",
        "",
        "| trainer | loop s | median step ms | trace tok/s | (median step) | row tok/s | trained tok/s "
        "| train loss | held-out loss |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows.items():
        s, median = r["seconds"], statistics.median(r["step_seconds"])
        lines.append(
            f"| {name} | {s:.1f} | {1000 * median:.0f} | {r['trace_tokens'] / s:,.0f} | "
            f"{r['trace_tokens'] / (steps * median):,.0f} | {r['row_tokens'] / s:,.0f} | "
            f"{r['trained_tokens'] / s:,.0f} | {r['train_loss']:.3f} | {r['heldout']:.3f} |"
        )
    ours, theirs = rows["cogcore"], rows["TRL SFTTrainer"]
    wall = (ours["trace_tokens"] / ours["seconds"]) / (theirs["trace_tokens"] / theirs["seconds"])
    by_median = (ours["trace_tokens"] / statistics.median(ours["step_seconds"])) / (
        theirs["trace_tokens"] / statistics.median(theirs["step_seconds"])
    )
    ratio = f"{wall:.2f}x over the loop, {by_median:.2f}x by median step"
    lines += ["", f"cogcore / TRL, trace tokens/s: {ratio}"]
    return "\n".join(lines)


def inputs(run_dir: Path, steps: int, precision_: str):
    """The distill config both sides follow, whether it trains in bf16, the training traces and their
    (input_ids, loss_mask) encodings, and the held-out traces' encodings."""
    dcfg = cogcore_cfg(run_dir, steps, precision_).distill
    tokenizer = AutoTokenizer.from_pretrained(run_dir / "student")
    traces = list(read_traces(run_dir / "traces" / "traces.jsonl"))
    train, val = split_traces(traces, dcfg.heldout_share, dcfg.seed)
    encoded = [encode_trace(tokenizer, t, TOOLS) for t in train]
    heldout = [encode_trace(tokenizer, t, TOOLS) for t in val]
    return dcfg, precision(dcfg) == "bf16", train, encoded, heldout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, default=Path("runs/demo"))
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--precision", choices=["auto", "no"], default="auto")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    datasets.disable_progress_bars()

    dcfg, bf16, train, encoded, heldout = inputs(args.run_dir, args.steps, args.precision)

    isa = os.environ.get("ATEN_CPU_CAPABILITY", "default")
    cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if "model name" in line)
    kind = "bf16 autocast" if bf16 else "fp32"
    machine = f"{cpu}, {args.threads} threads, {kind}, ATen CPU capability {isa}"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        results = {"cogcore": run_cogcore(args.run_dir, work, args.steps, args.precision, heldout)}
        AcceleratorState._reset_state(reset_partial_state=True)  # TRL's Trainer sets up its own
        trl = run_trl(args.run_dir, work, args.steps, bf16, dcfg, train, encoded, heldout)
        results["TRL SFTTrainer"] = trl
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "steps": args.steps, **results}, indent=1))
    print(table(results, args.steps, machine))


if __name__ == "__main__":
    main()
