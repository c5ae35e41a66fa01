"""`cogcore distill`: train a student on the teacher's traces, on one CPU or many GPUs through accelerate.

    cogcore distill student=tiny                                   # this machine
    accelerate launch --num_processes 8 -m cogcore.core.cli distill student=llama_1b   # DDP/FSDP/DeepSpeed
    torchrun --nproc_per_node 2 -m cogcore.core.cli distill         # 2 CPU processes (gloo)

Training runs in phases: an optional copy warm-up (`distill.copy_drills.warmup_steps` steps on short rows
of copy drills, which teach a from-scratch student to copy from its context before it meets the traces),
then the traces. The data order is a pure function of (seed, step): step s is step i of its phase and
takes global batch i of a per-epoch permutation of that phase's packed rows, and each process takes its
contiguous share of that batch. The loss of a step is normalised by the trained tokens of the whole
global batch, so 1 process and N processes with the same global batch compute the same gradient. A
checkpoint (model, optimizer, scheduler, RNG states, the weight average of `distill.ema` and the step,
which is the data position) is written under a temporary name and renamed; after a kill at any moment
the job resumes from the last one and continues exactly.

With `distill.lora.rank > 0` only low-rank adapters (peft LoRA) on `distill.lora.target_modules` train; the
checkpoints hold the adapters with the frozen weights, and the saved student has them merged in, so it
loads as a plain HF model everywhere.

Outputs in `<run_dir>/student/`: the final HF checkpoint (the weight average with `distill.ema`;
safetensors, config, tokenizer with chat template), `manifest.json` (written last), `metrics.jsonl`,
`checkpoints/`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import random
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator, DistributedType
from omegaconf import DictConfig, OmegaConf
from torch.optim.swa_utils import AveragedModel
from tqdm import tqdm
from transformers import PreTrainedTokenizerBase, get_scheduler

from cogcore.core.io import DataError, atomic_write_json, read_json, read_jsonl
from cogcore.core.stage import decide
from cogcore.core.tools import SEARCH_TOOL
from cogcore.core.trace import read_traces
from cogcore.distill.attention import use_packed_attention
from cogcore.distill.losses import distill_loss
from cogcore.distill.packing import PackedRows, check_drills, pack_drills, pack_traces
from cogcore.distill.student import build_student, count_parameters, load_tokenizer
from cogcore.distill.topk import TopkTeacher

TOOLS = [SEARCH_TOOL]


def split_traces(traces: list[dict], share: float, seed: int) -> tuple[list[dict], list[dict]]:
    """A fixed share of traces held out for the periodic held-out loss, chosen by a seeded shuffle."""
    order = sorted(traces, key=lambda t: t["id"])
    random.Random(seed).shuffle(order)
    n_val = max(1, int(len(order) * share)) if share > 0 else 0
    return order[n_val:], order[:n_val]


def batch_rows(step: int, n_rows: int, global_batch: int, seed: int) -> list[int]:
    """Row indices of global batch `step`: a fresh permutation per epoch, the last partial batch dropped."""
    per_epoch = n_rows // global_batch
    epoch, index = divmod(step, per_epoch)
    order = torch.randperm(n_rows, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    return order[index * global_batch : (index + 1) * global_batch].tolist()


@dataclass
class Phase:
    """A stretch of training on one set of packed rows, with its own batch shape."""

    name: str
    rows: PackedRows
    global_batch: int  # rows per optimizer step, over all processes
    micro_batch: int  # rows per forward pass and process
    steps: int
    topk: TopkTeacher | None = None  # the teacher's top-k log-probs for these rows, read from disk


def phase_at(phases: list[Phase], step: int) -> tuple[Phase, int]:
    """The phase global step `step` falls in, and the step's index within it."""
    for phase in phases:
        if step < phase.steps:
            return phase, step
        step -= phase.steps
    raise IndexError(f"step {step} is past the last phase")


def precision(dcfg: DictConfig) -> str:
    """auto: bf16 autocast on a GPU that supports it, and on a CPU with native bf16 arithmetic: AMX tiles
    (Intel Sapphire Rapids and later: 1.3x the fp32 throughput of the tiny student there) or AVX-512 bf16
    dot products (AMD Zen 4 and later: a training step 92 ms against 144 ms); fp32 elsewhere, where CPU
    bf16 is emulated and slower (BENCHMARKS.md, "bf16 on a CPU without AMX")."""
    if dcfg.precision != "auto":
        return dcfg.precision
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "no"
    return "bf16" if cpu_has_bf16() else "no"


def cpu_has_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether the CPU's flags (Linux's /proc/cpuinfo) include native bf16 arithmetic, and torch's kernels
    may use it: `ATEN_CPU_CAPABILITY=avx2` or `ONEDNN_MAX_CPU_ISA=AVX2` rule it out. (To measure an
    AVX2-only machine's path on a newer one, set both and `MKL_ENABLE_INSTRUCTIONS=AVX2`, without which
    MKL's matrix products still run AVX-512: benchmarks/matmul_isa.py.)"""
    if not cpuinfo.exists() or not torch.backends.cpu.get_cpu_capability().startswith("AVX512"):
        return False
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").upper()
    if isa not in ("ALL", "DEFAULT") and not isa.startswith(("AVX512", "AVX10", "AMX")):
        return False
    flags = set(cpuinfo.read_text().split())
    return bool(flags & {"amx_bf16", "avx512_bf16"})


def attention(dcfg: DictConfig, device: torch.device) -> str:
    """How packed rows attend: `per_trace` (distill/attention.py: each trace alone, fp32 on CPU) or `model`
    (the model's own implementation: transformers' block-diagonal mask for sdpa, varlen flash attention on
    GPU). auto: per_trace on CPU, where it runs the tiny student's steps 1.4-1.7x faster; model elsewhere,
    where one fused kernel per layer beats a loop of small ones."""
    if dcfg.attention == "auto":
        return "per_trace" if device.type == "cpu" else "model"
    return dcfg.attention


def compiled(model: torch.nn.Module, device: torch.device, main_process: bool = True) -> torch.nn.Module:
    """`model` under torch.compile; on a CPU without a working C++ compiler (inductor builds its CPU
    kernels with one) the model as it is, with one line saying why, rather than a crash at the first step.
    On 2 CPU cores it gains nothing in the loop and is not deterministic run to run (BENCHMARKS.md,
    "torch.compile held to AVX2 in all three"): an option for GPUs."""
    if device.type == "cpu":
        from torch._inductor import config as inductor
        from torch._inductor.cpp_builder import get_cpp_compiler
        from torch._inductor.exc import InvalidCxxCompiler

        try:
            get_cpp_compiler()  # the compiler inductor itself would use, found the way it finds it
        except InvalidCxxCompiler:
            if main_process:
                tried = (
                    inductor.cpp.cxx if isinstance(inductor.cpp.cxx, (list, tuple)) else (inductor.cpp.cxx,)
                )
                names = ", ".join(str(c) for c in tried if c)
                print(
                    f"distill: distill.compile=true, but no working C++ compiler ({names}) for torch.compile "
                    "on CPU: training without it (install g++ or set CXX to use it)"
                )
            return model
    return torch.compile(model)


def with_lora(model: torch.nn.Module, lcfg: DictConfig | None) -> torch.nn.Module:
    """`model` with trainable LoRA adapters and its own weights frozen, when `distill.lora.rank` > 0."""
    if not lcfg or not lcfg.rank:
        return model
    from peft import LoraConfig, get_peft_model

    targets = lcfg.target_modules
    config = LoraConfig(
        r=lcfg.rank,
        lora_alpha=lcfg.alpha,
        lora_dropout=lcfg.dropout,
        target_modules=targets if isinstance(targets, str) else list(targets),
        task_type="CAUSAL_LM",
    )
    with warnings.catch_warnings():  # peft's own use of a name transformers renamed; nothing to act on
        warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated", FutureWarning)
        return get_peft_model(model, config)


def optimizer_for(model: torch.nn.Module, dcfg: DictConfig) -> torch.optim.Optimizer:
    # Decay matrices only: norms and biases keep their scale (the usual GPT/Llama recipe).
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": dcfg.weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    fused = torch.cuda.is_available() and next(model.parameters()).is_cuda
    return torch.optim.AdamW(groups, lr=dcfg.lr, betas=tuple(dcfg.betas), eps=1e-8, fused=fused or None)


def scheduler_for(optimizer, dcfg: DictConfig, total_steps: int):
    if dcfg.schedule == "cosine":
        return get_scheduler(
            "cosine_with_min_lr",
            optimizer,
            num_warmup_steps=dcfg.warmup_steps,
            num_training_steps=total_steps,
            scheduler_specific_kwargs={"min_lr_rate": dcfg.min_lr_ratio},
        )
    decay = int(total_steps * dcfg.decay_ratio)  # wsd, the other schedule `validate` lets through
    return get_scheduler(
        "warmup_stable_decay",
        optimizer,
        num_warmup_steps=dcfg.warmup_steps,
        num_training_steps=total_steps,
        scheduler_specific_kwargs={
            "num_decay_steps": decay,
            "num_stable_steps": total_steps - dcfg.warmup_steps - decay,
            "min_lr_ratio": dcfg.min_lr_ratio,
        },
    )


def checkpoints(folder: Path) -> list[Path]:
    """Finished checkpoints, oldest first (a `.tmp-*` folder is a save that never finished)."""
    return sorted(p for p in folder.glob("step-*") if (p / "trainer_state.json").exists())


def save_checkpoint(accelerator: Accelerator, folder: Path, step: int, state: dict, keep: int) -> None:
    tmp, final = folder / f".tmp-step-{step:08d}", folder / f"step-{step:08d}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))  # model, optimizer, scheduler, RNG states (one file per process)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        atomic_write_json(tmp / "trainer_state.json", state)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        for old in checkpoints(folder)[:-keep]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()


class Metrics:
    """metrics.jsonl, and with `tensorboard` TensorBoard events beside it in tensorboard/, written by the
    main process only. On resume the records after the checkpoint's step are cut, so no step is ever
    logged twice."""

    def __init__(self, path: Path, resume_step: int, enabled: bool, tensorboard: bool):
        self.path, self.enabled, self.writer = path, enabled, None
        if not enabled:
            return
        kept = [r for r in read_jsonl(path) if r["step"] <= resume_step] if path.exists() else []
        path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        if tensorboard:  # `validate` has checked that the package is installed
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(path.parent / "tensorboard"))

    def log(self, step: int, values: dict) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **values}) + "\n")
        if self.writer:
            for key, value in values.items():
                if isinstance(value, int | float):
                    self.writer.add_scalar(key, value, step)


def load_teacher(dcfg: DictConfig, student_vocab: int, accelerator: Accelerator):
    if dcfg.kd.teacher is None:
        return None
    from transformers import AutoModelForCausalLM

    teacher = AutoModelForCausalLM.from_pretrained(dcfg.kd.teacher, dtype=torch.float32)
    if teacher.config.vocab_size != student_vocab:
        raise DataError(
            f"distill.kd.teacher={dcfg.kd.teacher}: vocabulary of {teacher.config.vocab_size} tokens, but "
            f"the student has {student_vocab}; a distillation teacher must share the student's tokenizer"
        )
    return accelerator.prepare_model(teacher.eval(), evaluation_mode=True)


def packed_forward(model, batch: dict) -> torch.Tensor:
    """Logits of packed rows. No attention mask and no cache: the packed traces are read off position_ids
    restarting at 0, by per-trace attention (distill/attention.py) or by transformers, which builds a
    block-diagonal causal mask, so attention never crosses from one trace into the next. (With a cache,
    even an empty one, transformers does not, and traces leak.)"""
    return model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits


def step_loss(model, teacher, batch: dict, dcfg: DictConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum over trained tokens of the loss, and their count: logits[:, t] predicts input_ids[:, t + 1]."""
    logits = packed_forward(model, batch)
    mask = batch["loss_mask"][:, 1:]
    teacher_logits = teacher_topk = kd_mask = None
    if teacher is not None:
        with torch.no_grad():
            teacher_logits = packed_forward(teacher, batch)
        teacher_logits = teacher_logits[:, :-1]
    if "topk_ids" in batch:
        teacher_topk = (batch["topk_ids"][:, :-1], batch["topk_logprobs"][:, :-1])
        kd_mask = mask & batch["known"][:, :-1]
    losses = distill_loss(
        logits[:, :-1],
        batch["input_ids"][:, 1:],
        mask,
        teacher_logits=teacher_logits,
        teacher_topk=teacher_topk,
        kd_mask=kd_mask,
        kind=dcfg.kd.kind,
        beta=dcfg.kd.beta,
        temperature=dcfg.kd.temperature,
        alpha=dcfg.kd.alpha,
    )
    tokens = mask.sum()
    return losses["loss"] * tokens, tokens


def ema_update(decay: float):
    """An `AveragedModel` update: exponential moving average whose decay warms up as min(decay, (1 + n) /
    (10 + n)) after n updates, so that a short run's average is not dominated by its first weights
    (at 0.999, a 480-step run would keep 62% of them)."""

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n_averaged: torch.Tensor) -> None:
        n = int(n_averaged)
        torch._foreach_lerp_(averaged, current, 1 - min(decay, (1 + n) / (10 + n)))

    return update


@torch.no_grad()
def heldout_loss(model, rows: PackedRows, dcfg: DictConfig, accelerator: Accelerator) -> float:
    """Cross-entropy per trained token over the held-out rows (no teacher: the student's own loss)."""
    # The unwrapped model: a DDP forward broadcasts buffers, a collective that would hang the processes
    # whose share of the held-out rows is smaller.
    model = accelerator.unwrap_model(model)
    model.eval()
    total = count = 0.0
    mine = list(range(accelerator.process_index, len(rows), accelerator.num_processes))
    for start in range(0, len(mine), dcfg.micro_batch):
        summed, tokens = step_loss(
            model, None, _batch(rows, mine[start : start + dcfg.micro_batch], accelerator.device), dcfg
        )
        total += float(summed)
        count += float(tokens)
    model.train()
    sums = accelerator.reduce(torch.tensor([total, count], device=accelerator.device), reduction="sum")
    return float(sums[0] / max(sums[1], 1.0))


def _batch(rows: PackedRows, indices: list[int], device) -> dict[str, torch.Tensor]:
    return {
        "input_ids": rows.input_ids[indices].to(device),
        "position_ids": rows.position_ids[indices].to(device),
        "loss_mask": rows.loss_mask[indices].to(device),
    }


def settings_of(cfg: DictConfig) -> dict:
    """What must match for a checkpoint to be resumed: the student and every training setting but
    `distill.tensorboard`, which changes no weight (so a run started before the key existed resumes)."""
    distill = OmegaConf.to_container(cfg.distill, resolve=True)
    del distill["tensorboard"]
    return {"student": OmegaConf.to_container(cfg.student, resolve=True), "distill": distill}


def validate(cfg: DictConfig, accelerator: Accelerator) -> None:
    """The config checked against itself, the traces it trains on and the processes it runs on, before a
    tokenizer is trained: each DataError names the key or the file and the fix."""
    dcfg, run_dir = cfg.distill, Path(cfg.run_dir)
    traces_path = run_dir / "traces" / "traces.jsonl"
    if not traces_path.exists():
        raise DataError(f"{traces_path}: no traces; run `cogcore traces run_dir={run_dir}` first")
    if dcfg.attention not in ("auto", "per_trace", "model"):
        raise DataError(f"distill.attention={dcfg.attention!r}: choose auto, per_trace or model")
    if dcfg.schedule not in ("cosine", "wsd"):
        raise DataError(f"distill.schedule={dcfg.schedule!r}: choose cosine or wsd")
    processes = accelerator.num_processes
    if dcfg.global_batch % (dcfg.micro_batch * processes):
        raise DataError(
            f"distill.global_batch={dcfg.global_batch} must be a multiple of distill.micro_batch="
            f"{dcfg.micro_batch} times the {processes} process(es)"
        )
    drills = dcfg.copy_drills
    if drills.warmup_steps and drills.rows % processes:
        raise DataError(
            f"distill.copy_drills.rows={drills.rows} must be a multiple of the {processes} process(es)"
        )
    check_drills(dcfg)
    if dcfg.kd.topk and dcfg.kd.teacher:
        raise DataError(
            "distill.kd: give a teacher model (kd.teacher) or its top-k on disk (kd.topk), not both"
        )
    if dcfg.ema:
        if not 0 < dcfg.ema < 1:
            raise DataError(f"distill.ema={dcfg.ema}: use a decay in (0, 1), e.g. 0.999, or null for none")
        if accelerator.distributed_type == DistributedType.FSDP:
            raise DataError("distill.ema averages whole weights, which FSDP shards: set distill.ema=null")
    if dcfg.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise DataError(
            "distill.tensorboard=true, but the tensorboard package is not installed: `pip install "
            "tensorboard`, or set distill.tensorboard=false"
        )


def distill(cfg: DictConfig) -> Path:
    """Train the student into <run_dir>/student/ (the module docstring says how); the folder."""
    dcfg = cfg.distill
    run_dir = Path(cfg.run_dir)
    out = run_dir / "student"
    ckpt_dir = out / "checkpoints"
    # One scheduler step per optimizer step, whatever the number of processes (accelerate's default
    # steps it once per process, which would run the schedule N times too fast).
    accelerator = Accelerator(
        mixed_precision=precision(dcfg),
        cpu=not torch.cuda.is_available(),
        step_scheduler_with_optimizer=False,
    )
    validate(cfg, accelerator)
    torch.manual_seed(dcfg.seed)
    random.seed(dcfg.seed)
    tokenizer = shared_tokenizer(cfg, accelerator)

    traces = list(read_traces(run_dir / "traces" / "traces.jsonl"))
    train_traces, val_traces = split_traces(traces, dcfg.heldout_share, dcfg.seed)
    phases = [trace_phase(dcfg, tokenizer, train_traces)]
    if dcfg.copy_drills.warmup_steps:
        phases.insert(0, copy_phase(dcfg, tokenizer, accelerator.num_processes))
    heldout = pack_traces(tokenizer, val_traces, TOOLS, dcfg, drills=False) if val_traces else None

    trainer = build_trainer(cfg, tokenizer, accelerator, sum(p.steps for p in phases))
    settings = settings_of(cfg)
    step = _resume_point(ckpt_dir, settings, accelerator)
    metrics = Metrics(out / "metrics.jsonl", step, accelerator.is_main_process, dcfg.tensorboard)
    if accelerator.is_main_process:
        print(describe(trainer, phases, dcfg, step))
    train(trainer, phases, step, heldout, metrics, dcfg, ckpt_dir, settings)

    if accelerator.is_main_process:
        manifest = student_manifest(trainer, phases, len(val_traces), metrics.path, dcfg, settings)
        save_student(trainer.final_weights(), tokenizer, out, manifest)
        print(f"distill: student saved to {out}")
    accelerator.wait_for_everyone()
    return out


def shared_tokenizer(cfg: DictConfig, accelerator: Accelerator) -> PreTrainedTokenizerBase:
    """The student's tokenizer, trained once, by the main process, and saved beside the checkpoints so
    that a resumed run (and every other process) uses exactly the same ids."""
    run_dir = Path(cfg.run_dir)
    ckpt_dir = run_dir / "student" / "checkpoints"
    sources = (run_dir / "world" / "corpus.jsonl", run_dir / "traces" / "traces.jsonl")
    if accelerator.is_main_process:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        tokenizer = load_tokenizer(cfg.student, *sources, ckpt_dir / "tokenizer")
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        tokenizer = load_tokenizer(cfg.student, *sources, ckpt_dir / "tokenizer")
    return tokenizer


def trace_phase(dcfg: DictConfig, tokenizer: PreTrainedTokenizerBase, traces: list[dict]) -> Phase:
    """The traces packed with their drills, for `distill.epochs` passes (or `distill.max_steps` steps) of
    `distill.global_batch` rows, with the teacher's top-k of `distill.kd.topk` when given."""
    rows = pack_traces(tokenizer, traces, TOOLS, dcfg)
    if len(rows) < dcfg.global_batch:
        raise DataError(
            f"only {len(rows)} packed rows for distill.global_batch={dcfg.global_batch}; lower it"
        )
    steps = dcfg.max_steps or int(dcfg.epochs * (len(rows) // dcfg.global_batch))
    topk = TopkTeacher(Path(dcfg.kd.topk), traces, rows) if dcfg.kd.topk else None
    return Phase("traces", rows, dcfg.global_batch, dcfg.micro_batch, steps, topk)


def copy_phase(dcfg: DictConfig, tokenizer: PreTrainedTokenizerBase, processes: int) -> Phase:
    """The copy warm-up: `copy_drills.warmup_steps` steps of `copy_drills.rows` rows of copy drills alone."""
    drills = dcfg.copy_drills
    return Phase(
        "copy", pack_drills(tokenizer, dcfg), drills.rows, drills.rows // processes, drills.warmup_steps
    )


@dataclass
class Trainer:
    """What the optimizer steps move: the prepared student, its optimizer and schedule, the teacher it
    learns from, and the weight average of `distill.ema`, which follows `plain`, the unwrapped weights."""

    accelerator: Accelerator
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    teacher: torch.nn.Module | None
    ema: AveragedModel | None
    plain: torch.nn.Module | None
    n_params: int
    attention: str  # per_trace or model

    def final_weights(self) -> torch.nn.Module:
        """The student to save: the weight average, or the last weights without one; LoRA merged in."""
        model = self.accelerator.unwrap_model(self.model) if self.ema is None else self.ema.module
        return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model


def build_trainer(
    cfg: DictConfig, tokenizer: PreTrainedTokenizerBase, accelerator: Accelerator, total_steps: int
) -> Trainer:
    """The fresh student of `cfg.student`, its optimizer and a schedule of `total_steps`, prepared by
    `accelerator`, with the teacher and the weight average the distill config asks for."""
    dcfg = cfg.distill
    model = build_student(cfg.student, tokenizer)
    n_params = count_parameters(model)
    attend = attention(dcfg, accelerator.device)
    if attend == "per_trace":
        use_packed_attention(model, True)
    model = with_lora(model, dcfg.lora)
    if dcfg.compile:
        model = compiled(model, accelerator.device, accelerator.is_main_process)
    optimizer = optimizer_for(model, dcfg)
    scheduler = scheduler_for(optimizer, dcfg, total_steps)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    teacher = load_teacher(dcfg, accelerator.unwrap_model(model).config.vocab_size, accelerator)
    ema = plain = None
    if dcfg.ema:  # an exponential moving average of the weights over the trace phase: the saved student
        plain = accelerator.unwrap_model(model, keep_torch_compile=False)  # the weights being trained
        ema = AveragedModel(plain, multi_avg_fn=ema_update(dcfg.ema))
        accelerator.register_for_checkpointing(ema)  # saved and restored with the checkpoints
    return Trainer(accelerator, model, optimizer, scheduler, teacher, ema, plain, n_params, attend)


def _resume_point(ckpt_dir: Path, settings: dict, accelerator: Accelerator) -> int:
    """The step to start at: that of the last checkpoint, whose states are loaded, or 0 without one. A
    checkpoint trained with other settings is refused."""
    if not (found := checkpoints(ckpt_dir)):
        return 0
    state = found[-1] / "trainer_state.json"
    decide(state, settings, key="settings", resumable=True)  # other settings: a DataError that says so
    accelerator.load_state(str(found[-1]))
    return read_json(state)["step"]


def describe(trainer: Trainer, phases: list[Phase], dcfg: DictConfig, step: int) -> str:
    """The line the job starts with: the student, its rows and its steps."""
    rows, warmup = phases[-1].rows, dcfg.copy_drills.warmup_steps
    return (
        f"distill: {trainer.n_params / 1e6:.2f}M parameters, {len(rows)} rows of {dcfg.seq_len} tokens "
        f"({rows.efficiency:.1%} filled, {rows.n_dropped} traces too long), {sum(p.steps for p in phases)} "
        f"steps, {trainer.attention.replace('_', '-')} attention"
        + (f" ({warmup} of copy warm-up first)" if warmup else "")
        + (f", resuming at step {step}" if step else "")
    )


def train(
    trainer: Trainer,
    phases: list[Phase],
    step: int,
    heldout: PackedRows | None,
    metrics: Metrics,
    dcfg: DictConfig,
    ckpt_dir: Path,
    settings: dict,
) -> None:
    """The optimizer steps from `step` to the end of the last phase, each logged every `log_every` steps,
    with the held-out loss every `eval_every` and a checkpoint every `ckpt_every` steps, and at the end."""
    accelerator, total_steps = trainer.accelerator, sum(p.steps for p in phases)
    trainer.model.train()
    bar = tqdm(
        total=total_steps, initial=step, desc="distill", unit="step", disable=not accelerator.is_main_process
    )
    started, tokens_seen = time.perf_counter(), 0
    while step < total_steps:
        phase, index = phase_at(phases, step)
        bar.set_description(f"distill ({phase.name})", refresh=False)
        indices = batch_rows(index, len(phase.rows), phase.global_batch, dcfg.seed)
        loss, grad_norm = optimizer_step(trainer, phase, indices, dcfg)
        step += 1

        tokens_seen += int(phase.rows.input_ids[indices].numel())
        rate = tokens_seen / (time.perf_counter() - started)
        bar.update()
        bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{rate:,.0f}", refresh=False)
        record = {
            "phase": phase.name,
            "loss": loss,
            "lr": trainer.scheduler.get_last_lr()[0],
            "grad_norm": grad_norm,
            "tokens_per_s": rate,
        }
        if heldout is not None and (step % dcfg.eval_every == 0 or step == total_steps):
            record["heldout_loss"] = heldout_loss(trainer.model, heldout, dcfg, accelerator)
            if trainer.ema is not None and phase.name == "traces":
                record["heldout_loss_ema"] = heldout_loss(trainer.ema.module, heldout, dcfg, accelerator)
        if step % dcfg.log_every == 0 or "heldout_loss" in record or step == total_steps:
            metrics.log(step, record)
        if step % dcfg.ckpt_every == 0 or step == total_steps:
            save_checkpoint(accelerator, ckpt_dir, step, {"step": step, "settings": settings}, dcfg.keep_last)
    bar.close()


def optimizer_step(
    trainer: Trainer, phase: Phase, indices: list[int], dcfg: DictConfig
) -> tuple[float, float]:
    """One optimizer step on the global batch `indices` of `phase`, this process taking its contiguous
    share in micro-batches: the batch's loss per trained token, and the gradient norm before clipping."""
    accelerator, model = trainer.accelerator, trainer.model
    world = accelerator.num_processes
    global_tokens = phase.rows.loss_mask[indices][:, 1:].sum().item()
    share = phase.global_batch // world
    mine = indices[accelerator.process_index * share : (accelerator.process_index + 1) * share]
    loss_sum = torch.zeros((), device=accelerator.device)
    micro = [mine[i : i + phase.micro_batch] for i in range(0, share, phase.micro_batch)]
    for j, part in enumerate(micro):
        batch = _batch(phase.rows, part, accelerator.device)
        if phase.topk is not None:
            batch |= {k: v.to(accelerator.device) for k, v in phase.topk.batch(phase.rows, part).items()}
        sync = accelerator.no_sync(model) if j + 1 < len(micro) else contextlib.nullcontext()
        with sync, accelerator.autocast():
            summed, _ = step_loss(model, trainer.teacher, batch, dcfg)
            # DDP averages gradients over processes; scaling by their number makes the result the
            # gradient of (sum of token losses) / (trained tokens in the global batch).
            accelerator.backward(summed * world / global_tokens)
        loss_sum += summed.detach()
    grad_norm = accelerator.clip_grad_norm_(model.parameters(), dcfg.clip)
    trainer.optimizer.step()
    trainer.scheduler.step()
    trainer.optimizer.zero_grad(set_to_none=True)
    if trainer.ema is not None and phase.name == "traces":  # its first update copies the weights
        trainer.ema.update_parameters(trainer.plain)
    return accelerator.reduce(loss_sum, reduction="sum").item() / global_tokens, float(grad_norm)


def student_manifest(
    trainer: Trainer,
    phases: list[Phase],
    n_heldout: int,
    metrics_path: Path,
    dcfg: DictConfig,
    settings: dict,
) -> dict:
    """manifest.json of the saved student: its size, its training and its last metrics."""
    return {
        "parameters": trainer.n_params,
        "steps": sum(p.steps for p in phases),
        "copy_warmup_steps": dcfg.copy_drills.warmup_steps,
        "train_traces": phases[-1].rows.n_traces,
        "copy_drills": sum(p.rows.n_drills for p in phases),
        "heldout_traces": n_heldout,
        "seq_len": dcfg.seq_len,
        "final": read_jsonl(metrics_path)[-1] if metrics_path.exists() else {},
        "settings": settings,
    }


def save_student(model, tokenizer, out: Path, manifest: dict) -> None:
    """The HF checkpoint, file by file renamed into place, then manifest.json last: a student folder
    without a manifest is one whose save did not finish."""
    tmp = out / ".final.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    use_packed_attention(model, False)  # the checkpoint is for inference: sdpa, masks and caches
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (out / "manifest.json").unlink(missing_ok=True)
    for f in tmp.iterdir():
        os.replace(f, out / f.name)
    tmp.rmdir()
    atomic_write_json(out / "manifest.json", manifest)
