"""Where a training step of each trainer of benchmarks/vs_trl.py goes: the forward and backward of one batch
(2 packed rows), median of `--steps` after 3 warm-ups, on the batches each trainer makes of the same traces,
in the precision `distill.precision` picks (`--precision no`: fp32), and torch.profiler's top operators.

    pip install -e '.[bench]'
    flock /work/heavy.lock .venv/bin/python benchmarks/vs_trl_profile.py --run-dir runs/demo

The variants, each isolating one difference between the two:
- cogcore: its step as `distill` takes it (`step_loss`: 2 rows of 1,024 tokens with a pad tail, per-trace
  attention, logits at every position);
- cogcore, trained logits only: the same, with the LM head and cross-entropy run only at the positions
  with a loss (what TRL's fused LM head does);
- TRL: `SFTTrainer.training_step` on its padding-free batch (the 2 packed rows as one row of up to 2,048
  tokens, sdpa over transformers' block-diagonal mask, TRL's fused LM head with its entropy and accuracy);
- TRL, per-trace attention: the same with cogcore's attention (distill/attention.py) in place of sdpa;
- cogcore's step on TRL's batches: `step_loss` on the padding-free rows, so that what remains against
  the line above is TRL's loss path (its fused LM head, entropy and accuracy, `training_step`).
The optimizer step is left out: both run the same AdamW on the same parameters.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import datasets
import torch
from omegaconf import OmegaConf
from transformers import AutoTokenizer
from vs_trl import CONF, inputs, trl_trainer

from cogcore.distill.attention import NAME, use_packed_attention
from cogcore.distill.student import build_student
from cogcore.distill.train import _batch, batch_rows, step_loss, trace_phase


def median_ms(step, batches: list, steps: int) -> float:
    times = []
    for batch in batches[: steps + 3]:
        started = time.perf_counter()
        step(batch)
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times[3:])


def top_ops(step, batches: list, n: int = 12) -> str:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for batch in batches[:5]:
            step(batch)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, default=Path("runs/demo"))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--precision", choices=["auto", "no"], default="auto")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    datasets.disable_progress_bars()

    n = args.steps + 3  # batches: 3 warm-ups, then the timed ones
    dcfg, bf16, train, encoded, _ = inputs(args.run_dir, n, args.precision)
    tokenizer = AutoTokenizer.from_pretrained(args.run_dir / "student")
    rows = trace_phase(dcfg, tokenizer, train).rows
    ours = [_batch(rows, batch_rows(s, len(rows), dcfg.global_batch, dcfg.seed), "cpu") for s in range(n)]
    model = build_student(OmegaConf.load(CONF / "student" / "tiny.yaml"), tokenizer)
    use_packed_attention(model, True)
    model.train()

    def cogcore_step(batch):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            summed, tokens = step_loss(model, None, batch, dcfg)
            (summed / tokens).backward()
        model.zero_grad(set_to_none=True)

    def trained_logits_step(batch):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            hidden = model.model(
                input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False
            ).last_hidden_state
            trained = batch["loss_mask"][:, 1:]
            logits = model.lm_head(hidden[:, :-1][trained])
            loss = torch.nn.functional.cross_entropy(logits.float(), batch["input_ids"][:, 1:][trained])
            loss.backward()
        model.zero_grad(set_to_none=True)

    with tempfile.TemporaryDirectory() as tmp:
        trainer = trl_trainer(args.run_dir, Path(tmp), n, bf16, dcfg, train, encoded)
        theirs = [b for b, _ in zip(trainer.get_train_dataloader(), range(n), strict=False)]
        trainer.current_gradient_accumulation_steps = 1  # what `train` sets before its steps

        def trl_step(batch):
            trainer.training_step(trainer.model, dict(batch))
            trainer.model.zero_grad(set_to_none=True)

        kind = "bf16 autocast" if bf16 else "fp32"
        ours_tokens = sum(int((b["input_ids"] != tokenizer.pad_token_id).sum()) for b in ours[3:])
        theirs_tokens = sum(b["input_ids"].numel() for b in theirs[3:])
        print(f"forward + backward of one step, median of {args.steps}, {kind}, {args.threads} threads")
        per_step = f"cogcore {ours_tokens / args.steps:.0f}, TRL {theirs_tokens / args.steps:.0f}"
        print(f"trace tokens per step: {per_step}")
        print("| variant | ms per step |\n|---|---:|")
        print(f"| cogcore | {median_ms(cogcore_step, ours, args.steps):.0f} |")
        print(f"| cogcore, trained logits only | {median_ms(trained_logits_step, ours, args.steps):.0f} |")
        print(f"| TRL SFTTrainer | {median_ms(trl_step, theirs, args.steps):.0f} |")
        print("\nTRL's top operators:\n" + top_ops(trl_step, theirs))
        trainer.model.set_attn_implementation(NAME)
        print(f"| TRL, per-trace attention | {median_ms(trl_step, theirs, args.steps):.0f} |")
        # cogcore's step on TRL's batches: what TRL's loss path (fused LM head, metrics) costs beyond it
        as_ours = [
            {"input_ids": b["input_ids"], "position_ids": b["position_ids"], "loss_mask": b["labels"] != -100}
            for b in theirs
        ]
        print(f"| cogcore's step on TRL's batches | {median_ms(cogcore_step, as_ours, args.steps):.0f} |")
        print("\ncogcore's top operators:\n" + top_ops(cogcore_step, ours))


if __name__ == "__main__":
    main()
