"""A training step of the full-size student (`student=llama_1b`) on one GPU: step time, tokens/s, MFU and
peak memory per micro batch, as cogcore's trainer takes the step.

The architecture is `arch:` of conf/student/llama_1b.yaml (transformers.LlamaConfig fields; the vocabulary
is the config's 128,256 rows, which covers the 32,768-token tokenizer, as distill/student.build_student
takes max(len(tokenizer), arch.vocab_size)); seq_len comes from conf/distill/sft.yaml, and so do AdamW's
lr, betas, weight decay and the clip. Weights are random (timing does not depend on their values) and
are made on the GPU directly.

The step is distill/train.py's, on one process: accelerate's Accelerator(mixed_precision="bf16") (fp32
weights, bf16 autocast, the logits handed back in fp32 by accelerate's forward wrapper), cogcore's own
loss (distill/losses.distill_loss: masked cross-entropy over the trained positions, logits[:, t] against
input_ids[:, t + 1]), the loss scaled by the trained tokens of the batch, backward, clip_grad_norm_ to
`clip`, fused AdamW with decay on matrices only (train.optimizer_for), zero_grad(set_to_none=True).
Rows are packed as the trainer packs them: traces of 100-700 tokens back to back in rows of seq_len
tokens, position_ids restarting at 0 at each trace, no attention mask, so transformers' sdpa attention
gets a block-diagonal causal mask (the trainer's `attention: auto` = `model` on GPU). The loss mask trains
the second half of each trace (the assistant's turns, roughly). `--unpacked` rows (one sequence per row,
plain causal sdpa, which may take the flash kernel) are measured too for the best micro batch, and then
torch.compile of the model in a child process bounded by what is left of `--budget`.

cogcore's loss is imported from the checkout through a temporary `cogcore` namespace of symlinks
(cogcore.core -> core/, cogcore.distill -> distill/), since distill/train.py and distill/student.py need
omegaconf; if that import fails, a plain masked cross-entropy of the same definition is used and the
output says so.

    python3 benchmarks/gpu_student.py            # on the GPU (about 4 minutes with the compile)
    .venv/bin/python benchmarks/gpu_student.py --tiny   # a 2-layer model on the CPU, end to end

MFU = (6 * N + 12 * n_layers * hidden * seq_len) * tokens/s / peak, N = the unique parameters (tied
embeddings once: the matrix of the LM head's product), peak = 989e12 bf16 dense FLOP/s (H100/H200 SXM).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from gpu_env import machine_lines, report_head

REPO = Path(__file__).resolve().parents[1]
PEAK = 989e12  # bf16 dense FLOP/s, H100/H200 SXM datasheet
STARTED = time.perf_counter()


def elapsed() -> float:
    return time.perf_counter() - STARTED


def cogcore_loss():
    """cogcore's distill_loss from this checkout, or None (and why) when it does not import."""
    try:
        import cogcore.distill.losses as losses  # an installed cogcore (the .venv here)

        return losses.distill_loss, f"cogcore.distill.losses.distill_loss ({losses.__file__})"
    except Exception:
        pass
    ns = Path(tempfile.mkdtemp(prefix="cogcore_ns_"))
    (ns / "cogcore").mkdir()
    for name in ("core", "distill"):
        (ns / "cogcore" / name).symlink_to(REPO / name, target_is_directory=True)
    sys.path.insert(0, str(ns))
    try:
        import cogcore.distill.losses as losses

        return losses.distill_loss, f"cogcore.distill.losses.distill_loss ({REPO / 'distill/losses.py'})"
    except Exception as e:  # noqa: BLE001
        return None, f"plain masked CE (cogcore's loss did not import: {type(e).__name__}: {e})"


def plain_masked_ce(logits, labels, mask, **_):
    rows = logits[mask].float()
    ce = F.cross_entropy(rows, labels[mask], reduction="sum") / max(int(mask.sum()), 1)
    return {"loss": ce, "ce": ce}


def packed_rows(n_rows: int, seq_len: int, vocab: int, packed: bool, seed: int, min_len: int, max_len: int):
    """input_ids, position_ids, loss_mask [n_rows, seq_len] as the trainer packs traces."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (n_rows, seq_len), generator=g)
    pos = torch.empty(n_rows, seq_len, dtype=torch.long)
    mask = torch.zeros(n_rows, seq_len, dtype=torch.bool)
    n_traces = 0
    for r in range(n_rows):
        t = 0
        while t < seq_len:
            n = seq_len if not packed else int(torch.randint(min_len, max_len + 1, (1,), generator=g))
            n = min(n, seq_len - t)
            pos[r, t : t + n] = torch.arange(n)
            mask[r, t + n // 2 : t + n] = True
            t += n
            n_traces += 1
    return {"input_ids": ids, "position_ids": pos, "loss_mask": mask}, n_traces / n_rows


def build_model(arch: dict, device: torch.device):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**arch, attn_implementation="sdpa")
    torch.manual_seed(0)
    with device:
        model = LlamaForCausalLM(config)
    return model


# A 2-layer Llama's shape, for the packed-attention check and `--tiny`
TINY = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2
)


def packed_attention_check(device: torch.device) -> str:
    """Whether packed rows attend per trace here: a 2-layer model's logits of a trace packed after another
    against the trace alone (fp32)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    try:
        cfg = LlamaConfig(vocab_size=100, **TINY, attn_implementation="sdpa")
        torch.manual_seed(0)
        with device:
            m = LlamaForCausalLM(cfg).eval()
        a, b = torch.randint(0, 100, (1, 40), device=device), torch.randint(0, 100, (1, 24), device=device)
        pos = torch.cat([torch.arange(40), torch.arange(24)])[None].to(device)
        with torch.no_grad():
            packed = m(input_ids=torch.cat([a, b], 1), position_ids=pos, use_cache=False).logits[:, 40:]
            alone = m(input_ids=b, use_cache=False).logits
        diff = float((packed - alone).abs().max())
        verdict = "per-trace (block-diagonal) OK" if diff < 1e-3 else "LEAKS across traces"
        return f"{verdict}: max |packed - alone| logit difference {diff:.2e}"
    except Exception as e:  # noqa: BLE001
        return f"check failed: {type(e).__name__}: {e}"


def count_parameters(model) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def optimizer_for(model, dcfg: dict):
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": dcfg["weight_decay"]},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    fused = next(model.parameters()).is_cuda
    return torch.optim.AdamW(groups, lr=dcfg["lr"], betas=tuple(dcfg["betas"]), eps=1e-8, fused=fused or None)


class Trainer:
    """One process of distill/train.py's loop, reduced to its step."""

    def __init__(self, model, dcfg: dict, loss_fn, precision: str, compile_model: bool):
        self.dcfg, self.loss_fn = dcfg, loss_fn
        self.accelerator = None
        try:
            from accelerate import Accelerator

            self.accelerator = Accelerator(
                mixed_precision=precision,
                cpu=not torch.cuda.is_available(),
                step_scheduler_with_optimizer=False,
            )
        except Exception as e:  # noqa: BLE001
            print(f"note: accelerate unavailable ({e}); plain torch.autocast")
        self.precision = precision
        if compile_model:
            model = torch.compile(model)
        optimizer = optimizer_for(model, dcfg)
        if self.accelerator is not None:
            model, optimizer = self.accelerator.prepare(model, optimizer)
        self.model, self.optimizer = model, optimizer
        self.device = next(model.parameters()).device
        model.train()

    def autocast(self):
        if self.accelerator is not None:
            return self.accelerator.autocast()
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def step(self, batch: dict) -> float:
        mask = batch["loss_mask"][:, 1:]
        tokens = mask.sum()
        with self.autocast():
            logits = self.model(
                input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False
            ).logits
            loss = self.loss_fn(logits[:, :-1], batch["input_ids"][:, 1:], mask)["loss"]
            summed = loss * tokens
            scaled = summed / tokens
            if self.accelerator is not None:
                self.accelerator.backward(scaled)
            else:
                scaled.backward()
        if self.accelerator is not None:
            self.accelerator.clip_grad_norm_(self.model.parameters(), self.dcfg["clip"])
        else:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.dcfg["clip"])
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return summed.detach()


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_steps(trainer: Trainer, batch: dict, warmup: int, steps: int, deadline: float) -> dict:
    device = trainer.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(warmup):
        trainer.step(batch)
    sync(device)
    warm_s = time.perf_counter() - t0
    times = []
    for _ in range(steps):
        if times and elapsed() > deadline:
            break
        sync(device)
        t = time.perf_counter()
        last = trainer.step(batch)
        sync(device)
        times.append(time.perf_counter() - t)
    out = {"warmup_s": round(warm_s, 2), "timed_steps": len(times), "step_s": statistics.median(times)}
    out["step_s_min"], out["step_s_max"] = min(times), max(times)
    out["loss"] = float(last) / max(float(batch["loss_mask"][:, 1:].sum()), 1.0)
    if device.type == "cuda":
        out["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
        out["peak_reserved_gib"] = torch.cuda.max_memory_reserved() / 2**30
    return out


def mfu_of(n_params: int, n_layers: int, hidden: int, seq_len: int, tok_s: float) -> float:
    return (6 * n_params + 12 * n_layers * hidden * seq_len) * tok_s / PEAK


def settings(args) -> tuple[dict, dict]:
    student = yaml.safe_load((REPO / "conf/student/llama_1b.yaml").read_text())
    dcfg = yaml.safe_load((REPO / "conf/distill/sft.yaml").read_text())
    arch = dict(student["arch"])
    # build_student: the embedding covers the tokenizer (student.vocab_size) and the config's rows.
    arch["vocab_size"] = max(int(student.get("vocab_size") or 0), int(arch.get("vocab_size", 0)))
    if args.tiny:
        arch.update(TINY, vocab_size=1000, max_position_embeddings=512)
        dcfg["seq_len"] = 128
    return arch, dcfg


def run_config(model, dcfg, loss_fn, precision, mb, packed, args, deadline, compile_model=False, label=None):
    device = next(model.parameters()).device
    seq_len = dcfg["seq_len"]
    lo, hi = (100, 700) if not args.tiny else (16, 64)
    vocab_ids = min(32768, model.config.vocab_size)  # the tokenizer's ids
    cpu_batch, traces_per_row = packed_rows(mb, seq_len, vocab_ids, packed, seed=mb, min_len=lo, max_len=hi)
    batch = {k: v.to(device) for k, v in cpu_batch.items()}
    row = {
        "config": label or ("packed" if packed else "unpacked"),
        "micro_batch": mb,
        "seq_len": seq_len,
        "traces_per_row": round(traces_per_row, 2),
        "trained_share": round(float(cpu_batch["loss_mask"][:, 1:].float().mean()), 3),
    }
    trainer = None
    try:
        trainer = Trainer(model, dcfg, loss_fn, precision, compile_model)
        row.update(time_steps(trainer, batch, args.warmup, args.steps, deadline))
        row["tokens_per_s"] = mb * seq_len / row["step_s"]
    except torch.cuda.OutOfMemoryError as e:
        row["error"] = "OOM: " + str(e).splitlines()[0][:160]
    except Exception as e:  # noqa: BLE001
        row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
    finally:
        if trainer is not None:
            trainer.optimizer.zero_grad(set_to_none=True)
            if trainer.accelerator is not None:
                trainer.accelerator.free_memory()
        # accelerate's prepare wraps model.forward (autocast, fp32 outputs): undo it, so the next config's
        # prepare wraps the plain forward once.
        if "_original_forward" in model.__dict__:
            model.forward = model.__dict__.pop("_original_forward")
        del trainer, batch
        model.zero_grad(set_to_none=True)
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return row


def compile_child(args) -> None:
    """Run in a child process: torch.compile of the model at one micro batch; prints one RESULT line."""
    arch, dcfg = settings(args)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    loss_fn, _ = cogcore_loss()
    loss_fn = loss_fn or plain_masked_ce
    model = build_model(arch, device)
    deadline = args.child_deadline
    row = run_config(
        model,
        dcfg,
        loss_fn,
        "bf16",
        args.child_mb,
        not args.child_unpacked,
        args,
        deadline,
        compile_model=True,
        label="compiled " + ("unpacked" if args.child_unpacked else "packed"),
    )
    print("RESULT " + json.dumps(row), flush=True)


def fmt_row(r: dict, n_params: int, arch: dict) -> str:
    if "error" in r:
        tokens = r["micro_batch"] * r["seq_len"]
        return f"| {r['config']} | {r['micro_batch']} | {tokens} | - | - | - | - | {r['error']} |"
    mfu = mfu_of(n_params, arch["num_hidden_layers"], arch["hidden_size"], r["seq_len"], r["tokens_per_s"])
    r["mfu"] = mfu
    mem = f"{r['peak_mem_gib']:.1f}" if "peak_mem_gib" in r else "-"
    return (
        f"| {r['config']} | {r['micro_batch']} | {r['micro_batch'] * r['seq_len']} | "
        f"{r['step_s'] * 1e3:.1f} ({r['timed_steps']} steps, {r['step_s_min'] * 1e3:.1f}-"
        f"{r['step_s_max'] * 1e3:.1f}) | {r['tokens_per_s']:,.0f} | {mfu:.1%} | {mem} | "
        f"warm-up {r['warmup_s']} s, loss {r['loss']:.3f}, {r['traces_per_row']} traces/row |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="2 layers, hidden 64, seq_len 128 (CPU test)")
    parser.add_argument("--micro-batches", default=None, help="comma list (default 2,4,8,16,32; tiny 2,4)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 10; tiny 3)")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up steps (default 3; tiny 1)")
    parser.add_argument("--budget", type=float, default=230.0, help="seconds for the whole script")
    parser.add_argument("--compile", dest="compile", action="store_true", default=None)
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument("--child-mb", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-unpacked", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child-deadline", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.steps = args.steps or (3 if args.tiny else 10)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.tiny else 3)
    if args.compile is None:
        args.compile = not args.tiny
    if args.child_mb is not None:
        compile_child(args)
        return

    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    arch, dcfg = settings(args)
    mbs = [int(x) for x in (args.micro_batches or ("2,4" if args.tiny else "2,4,8,16,32")).split(",")]
    print("# gpu_student: cogcore's llama_1b student, one training step")
    print()
    for line in machine_lines("transformers", "accelerate"):
        print("    " + line)
    loss_fn, loss_src = cogcore_loss()
    print(f"    loss: {loss_src}")
    loss_fn = loss_fn or plain_masked_ce

    print(
        f"    packed attention (transformers sdpa, position_ids restarting, no mask): "
        f"{packed_attention_check(device)}"
    )
    model = build_model(arch, device)
    n_params = count_parameters(model)
    n_embed = model.get_input_embeddings().weight.numel()
    n_nonembed = n_params - n_embed
    print(f"    arch: {json.dumps(arch)}{'  (TINY)' if args.tiny else ''}")
    print(
        f"    parameters: {n_params:,} total (tied embeddings once), {n_nonembed:,} non-embedding, "
        f"{n_embed:,} embedding ({model.config.vocab_size} x {arch['hidden_size']})"
    )
    print(
        f"    trainer: accelerate mixed_precision=bf16 (fp32 weights, bf16 autocast), fused AdamW "
        f"lr={dcfg['lr']} betas={dcfg['betas']} wd={dcfg['weight_decay']} (matrices), clip={dcfg['clip']}, "
        f"attention {model.config._attn_implementation}, seq_len={dcfg['seq_len']} "
        f"(sft.yaml micro_batch={dcfg['micro_batch']}, global_batch={dcfg['global_batch']})"
    )
    print(
        f"    MFU = (6*N + 12*n_layers*hidden*seq_len) * tokens/s / {PEAK:.3g}, N = {n_params:,}, "
        f"n_layers = {arch['num_hidden_layers']}, hidden = {arch['hidden_size']}; step time = median of "
        f"{args.steps} timed steps after {args.warmup} warm-ups, torch.cuda.synchronize around each"
    )
    print(f"    model built in {elapsed():.1f} s")
    print(flush=True)

    # Keep ~35% of the budget for the unpacked and compiled runs.
    rows = []
    plain_deadline = args.budget * (0.55 if args.compile else 0.85)
    for mb in mbs:
        if elapsed() > plain_deadline:
            rows.append(
                {
                    "config": "packed",
                    "micro_batch": mb,
                    "seq_len": dcfg["seq_len"],
                    "error": f"skipped: budget ({elapsed():.0f} s used)",
                }
            )
            continue
        r = run_config(model, dcfg, loss_fn, "bf16", mb, True, args, plain_deadline)
        rows.append(r)
        print("progress " + json.dumps(r), flush=True)
        if "error" in r and r["error"].startswith("OOM"):
            for rest in mbs[mbs.index(mb) + 1 :]:
                rows.append(
                    {
                        "config": "packed",
                        "micro_batch": rest,
                        "seq_len": dcfg["seq_len"],
                        "error": "skipped after OOM at a smaller micro batch",
                    }
                )
            break
    ok = [r for r in rows if "error" not in r]
    best = max(ok, key=lambda r: r["tokens_per_s"])["micro_batch"] if ok else None
    if best is not None and elapsed() < args.budget * 0.75:
        r = run_config(model, dcfg, loss_fn, "bf16", best, False, args, args.budget * 0.75)
        rows.append(r)
        print("progress " + json.dumps(r), flush=True)
    del model
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()

    if args.compile and best is not None:
        left = args.budget - elapsed() - 5
        if left < 45:
            rows.append(
                {
                    "config": "compiled packed",
                    "micro_batch": best,
                    "seq_len": dcfg["seq_len"],
                    "error": f"skipped: {left:.0f} s of budget left",
                }
            )
        else:
            cmd = [
                sys.executable,
                __file__,
                "--child-mb",
                str(best),
                "--steps",
                str(args.steps),
                "--warmup",
                str(args.warmup),
                "--child-deadline",
                str(left - 5),
            ]
            if args.tiny:
                cmd.append("--tiny")
            t = time.perf_counter()
            try:
                child = subprocess.run(cmd, capture_output=True, text=True, timeout=left)
                found = [ln for ln in child.stdout.splitlines() if ln.startswith("RESULT ")]
                if found:
                    r = json.loads(found[-1][7:])
                else:
                    tail = (child.stderr.strip().splitlines() or ["no output"])[-1][:200]
                    r = {
                        "config": "compiled packed",
                        "micro_batch": best,
                        "seq_len": dcfg["seq_len"],
                        "error": f"child rc={child.returncode}: {tail}",
                    }
            except subprocess.TimeoutExpired:
                r = {
                    "config": "compiled packed",
                    "micro_batch": best,
                    "seq_len": dcfg["seq_len"],
                    "error": f"timed out after {time.perf_counter() - t:.0f} s (compile + warm-up)",
                }
            r["child_wall_s"] = round(time.perf_counter() - t, 1)
            rows.append(r)
            print("progress " + json.dumps(r), flush=True)

    print()
    print(
        "| config | micro batch | tokens/step | step ms (median; timed steps, min-max) | tokens/s | MFU | "
        "peak mem GiB | notes |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(fmt_row(r, n_params, arch))
    print()
    summary = {
        **report_head("gpu_student", args.tiny),
        "params_total": n_params,
        "params_non_embedding": n_nonembed,
        "seq_len": dcfg["seq_len"],
        "peak_flops": PEAK,
        "mfu_formula": "(6*N + 12*n_layers*hidden*seq_len) * tokens_per_s / peak",
        "loss": loss_src,
        "wall_s": round(elapsed(), 1),
        "rows": rows,
    }
    print("JSON " + json.dumps(summary))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
