"""The trainer: an interrupted-and-resumed run ends with the weights of an uninterrupted one, 2 processes
follow the loss curve of 1 with the same global batch, and the student it saves loads as an HF model."""

from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import MICRO, make_cfg
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from cogcore.core.io import DataError, read_json, read_jsonl
from cogcore.core.trace import read_traces
from cogcore.distill.losses import distill_loss
from cogcore.distill.packing import encode_trace, pack_traces
from cogcore.distill.teachers.hf import save_topk
from cogcore.distill.topk import TopkTeacher
from cogcore.distill.train import TOOLS, Metrics, cpu_has_bf16, distill, ema_update, split_traces

MICRO = (*MICRO, "distill.log_every=1")


def prepared(small_run, tmp_path, name):
    run = tmp_path / name
    for stage in ("world", "traces"):
        shutil.copytree(small_run / stage, run / stage)
    return run


def weights(run):
    return load_file(str(run / "student" / "model.safetensors"))


@pytest.mark.parametrize("lora", [(), ("distill.lora.rank=4", "distill.lora.alpha=8")], ids=["full", "lora"])
def test_resume_after_kill_9_matches_an_uninterrupted_run(small_run, tmp_path, lora):
    steps = ("distill.max_steps=30", "distill.ckpt_every=3", "distill.eval_every=10", "distill.ema=0.8")
    steps = (*steps, *lora)
    straight = prepared(small_run, tmp_path, "straight")
    distill(make_cfg("distill", straight, *MICRO, *steps))

    killed = prepared(small_run, tmp_path, "killed")
    command = [sys.executable, "-m", "cogcore.core.cli", "distill", f"run_dir={killed}", *MICRO, *steps]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = killed / "student" / "checkpoints" / "step-00000006" / "trainer_state.json"
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None and not marker.exists():
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "training ended before it could be killed"
    assert not (killed / "student" / "manifest.json").exists()

    distill(make_cfg("distill", killed, *MICRO, *steps))
    a, b = weights(straight), weights(killed)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # The metrics of the resumed run hold each step once, with the uninterrupted run's losses.
    resumed, reference = (
        read_jsonl(killed / "student" / "metrics.jsonl"),
        read_jsonl(straight / "student" / "metrics.jsonl"),
    )
    assert [r["step"] for r in resumed] == list(range(1, 33))  # 2 copy warm-up steps, then 30
    assert [r["phase"] for r in resumed[:3]] == ["copy", "copy", "traces"]
    assert [r["loss"] for r in resumed] == pytest.approx([r["loss"] for r in reference], rel=1e-6)
    kept = sorted(p.name for p in (killed / "student" / "checkpoints").iterdir())
    assert kept == ["step-00000030", "step-00000032", "tokenizer"]
    if lora:  # the adapters are merged into a plain checkpoint, and they did train
        assert not any("lora" in key for key in a)
        AutoModelForCausalLM.from_pretrained(straight / "student")
        last = next((straight / "student" / "checkpoints").glob("step-*"))
        adapters = load_file(str(last / "model.safetensors"))
        assert any("lora_B" in key and adapters[key].abs().sum() > 0 for key in adapters)


def test_weight_average_warms_up_then_decays_at_its_rate():
    weights = torch.nn.Linear(2, 1, bias=False)
    average = torch.optim.swa_utils.AveragedModel(weights, multi_avg_fn=ema_update(0.9))
    expected = None
    for n in range(100):
        with torch.no_grad():
            weights.weight.fill_(float(n))
        average.update_parameters(weights)
        # the first update copies; the next, with n averaged so far, keeps min(0.9, (1 + n) / (10 + n))
        decay = min(0.9, (1 + n) / (10 + n))
        expected = 0.0 if expected is None else decay * expected + (1 - decay) * n
        assert average.module.weight.flatten().tolist() == pytest.approx([expected, expected])
    assert decay == 0.9 and int(average.n_averaged) == 100


def test_resume_with_other_settings_is_refused(small_run, tmp_path):
    run = prepared(small_run, tmp_path, "run")
    distill(make_cfg("distill", run, *MICRO, "distill.max_steps=2"))
    with pytest.raises(DataError, match=r"other settings \(distill\)"):
        distill(make_cfg("distill", run, *MICRO, "distill.max_steps=2", "distill.lr=1e-4"))


def test_tensorboard_is_written_only_when_asked_and_refused_when_missing(small_run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if the package were not installed
    run = prepared(small_run, tmp_path, "run")
    with pytest.raises(DataError, match="`pip install tensorboard`, or set distill.tensorboard=false"):
        distill(make_cfg("distill", run, *MICRO, "distill.tensorboard=true"))
    assert not (run / "student").exists()  # refused before a tokenizer was trained
    metrics = Metrics(tmp_path / "metrics.jsonl", 0, enabled=True, tensorboard=False)  # imports nothing
    metrics.log(1, {"loss": 2.5})
    assert read_jsonl(tmp_path / "metrics.jsonl") == [{"step": 1, "loss": 2.5}]
    assert not (tmp_path / "tensorboard").exists()


def test_two_processes_follow_the_curve_of_one(small_run, tmp_path):
    steps = ("distill.max_steps=6", "distill.ckpt_every=100")
    one = prepared(small_run, tmp_path, "one")
    distill(make_cfg("distill", one, *MICRO, *steps))
    two = prepared(small_run, tmp_path, "two")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",  # a free rendezvous port of its own
        "--nproc_per_node",
        "2",
    ]
    result = subprocess.run(
        [*torchrun, "-m", "cogcore.core.cli", "distill", f"run_dir={two}", *MICRO, *steps],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    curve = lambda run: [r["loss"] for r in read_jsonl(run / "student" / "metrics.jsonl")]  # noqa: E731
    assert len(curve(one)) == 8  # 2 copy warm-up steps, then 6 on traces
    assert curve(two) == pytest.approx(curve(one), rel=1e-4)


def test_per_trace_attention_trains_like_the_models_own(small_run, tmp_path, capsys):
    """distill.attention=per_trace (the CPU default) and =model follow the same fp32 loss curve."""
    curves = {}
    for choice in ("per_trace", "model"):
        run = prepared(small_run, tmp_path, choice)
        distill(
            make_cfg(
                "distill",
                run,
                *MICRO,
                "distill.max_steps=4",
                "distill.precision=no",
                f"distill.attention={choice}",
            )
        )
        assert f"{choice.replace('_', '-')} attention" in capsys.readouterr().out
        curves[choice] = [r["loss"] for r in read_jsonl(run / "student" / "metrics.jsonl")]
    assert len(curves["model"]) == 6
    assert curves["per_trace"] == pytest.approx(curves["model"], rel=1e-4)
    with pytest.raises(DataError, match="distill.attention='flash'"):
        distill(make_cfg("distill", prepared(small_run, tmp_path, "bad"), *MICRO, "distill.attention=flash"))


def test_compile_without_a_cpp_compiler_trains_without_it(small_run, tmp_path, capsys):
    """distill.compile=true on a CPU with no working C++ compiler: one line says so and the run trains
    to the end without torch.compile, where inductor would stop at the first step (InvalidCxxCompiler)."""
    from torch._inductor import config as inductor

    run = prepared(small_run, tmp_path, "no_compiler")
    with inductor.patch({"cpp.cxx": ("/nonexistent/g++",)}):
        distill(make_cfg("distill", run, *MICRO, "distill.max_steps=2", "distill.compile=true"))
    out = capsys.readouterr().out
    assert "no working C++ compiler (/nonexistent/g++)" in out and "training without it" in out
    assert len(read_jsonl(run / "student" / "metrics.jsonl")) >= 2
    assert weights(run)


def test_saved_student_loads_and_renders_the_trained_ids(small_run, tmp_path):
    run = prepared(small_run, tmp_path, "run")
    out = distill(make_cfg("distill", run, *MICRO, "distill.max_steps=2"))
    manifest = read_json(out / "manifest.json")
    assert manifest["steps"] == 4 and manifest["copy_warmup_steps"] == 2 and manifest["parameters"] > 0
    model = AutoModelForCausalLM.from_pretrained(out)
    assert (
        model.config._attn_implementation == "sdpa"
    )  # trained with per-trace attention, saved for inference
    tokenizer = AutoTokenizer.from_pretrained(out)
    trace = next(read_traces(run / "traces" / "traces.jsonl"))
    ids, mask = encode_trace(tokenizer, trace, TOOLS)
    rendered = tokenizer.apply_chat_template(trace["messages"], tools=TOOLS, tokenize=True, return_dict=True)
    assert rendered["input_ids"] == ids and sum(mask) > 0
    with torch.no_grad():
        assert model(torch.tensor([ids])).logits.shape == (1, len(ids), model.config.vocab_size)


def test_logit_distillation_from_a_local_teacher(small_run, tmp_path):
    teacher_run = prepared(small_run, tmp_path, "teacher")
    teacher = distill(make_cfg("distill", teacher_run, *MICRO, "distill.max_steps=2"))
    run = prepared(small_run, tmp_path, "student")
    out = distill(
        make_cfg("distill", run, *MICRO, "distill=kd", f"distill.kd.teacher={teacher}", "distill.max_steps=2")
    )
    assert read_json(out / "manifest.json")["settings"]["distill"]["kd"]["teacher"] == str(teacher)
    wide = prepared(small_run, tmp_path, "wide")
    with pytest.raises(DataError, match="must share the student's tokenizer"):
        distill(
            make_cfg(
                "distill",
                wide,
                *MICRO,
                "student.vocab_size=600",
                "+student.arch.vocab_size=700",
                "distill=kd",
                f"distill.kd.teacher={teacher}",
                "distill.max_steps=1",
            )
        )


def test_distillation_from_topk_shards_on_disk(small_run, tmp_path):
    """kd.topk reads the teacher's top-k along the packed rows: with K = the whole vocabulary it gives
    exactly the loss of the teacher's full logits (copy drills, which have no top-k, carry CE only)."""
    teacher_dir = distill(
        make_cfg("distill", prepared(small_run, tmp_path, "teacher"), *MICRO, "distill.max_steps=2")
    )
    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    run = prepared(small_run, tmp_path, "student")
    vocab = teacher.config.vocab_size
    save_topk(
        run / "traces" / "traces.jsonl", run / "traces" / "topk", teacher, tokenizer, k=vocab, batch_size=8
    )

    # The trainer's rows (the from-scratch student trains the same BPE tokenizer on the same traces).
    dcfg = make_cfg("distill", run, *MICRO).distill
    train_traces, _ = split_traces(list(read_traces(run / "traces" / "traces.jsonl")), 0.02, 0)
    rows = pack_traces(tokenizer, train_traces, TOOLS, dcfg)
    topk = TopkTeacher(run / "traces" / "topk", train_traces, rows)
    part = [0, 1]
    batch = {
        "input_ids": rows.input_ids[part],
        "position_ids": rows.position_ids[part],
        "loss_mask": rows.loss_mask[part],
    } | topk.batch(rows, part)
    assert batch["known"].any() and (rows.loss_mask[part][:, 1:] & ~batch["known"][:, :-1]).any()  # drills
    with torch.no_grad():
        full = teacher(
            input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False
        ).logits
        student = teacher.model.embed_tokens.weight.new_empty(full.shape).normal_()
    mask = batch["loss_mask"][:, 1:]
    kd_mask = mask & batch["known"][:, :-1]
    labels = batch["input_ids"][:, 1:]
    from_disk = distill_loss(
        student[:, :-1],
        labels,
        mask,
        teacher_topk=(batch["topk_ids"][:, :-1], batch["topk_logprobs"][:, :-1]),
        kd_mask=kd_mask,
    )
    in_memory = distill_loss(student[:, :-1], labels, mask, teacher_logits=full[:, :-1], kd_mask=kd_mask)
    assert from_disk["kd"].item() == pytest.approx(in_memory["kd"].item(), rel=1e-4)

    out = distill(make_cfg("distill", run, *MICRO, "distill=kd_topk", "distill.max_steps=2"))
    assert read_json(out / "manifest.json")["settings"]["distill"]["kd"]["topk"] == str(
        run / "traces" / "topk"
    )
    assert all(math.isfinite(r["loss"]) for r in read_jsonl(out / "metrics.jsonl"))

    other = prepared(small_run, tmp_path, "other")
    shutil.copytree(run / "traces" / "topk", other / "traces" / "topk")
    with pytest.raises(DataError, match="scored with other token ids"):
        distill(make_cfg("distill", other, *MICRO, "student.vocab_size=600", "distill=kd_topk"))
    index = other / "traces" / "topk" / "index.jsonl"
    index.write_text("".join(index.read_text().splitlines(keepends=True)[1:]))
    with pytest.raises(DataError, match=r"no top-k for 1 of \d+ traces"):
        distill(make_cfg("distill", other, *MICRO, "distill=kd_topk"))


@pytest.mark.parametrize(
    ("flags", "native"),
    [
        ("fpu avx2 avx512f amx_bf16 amx_tile", True),  # Intel Sapphire Rapids
        ("fpu avx2 avx512f avx512_bf16 avx512_vnni", True),  # AMD Zen 4
        ("fpu avx2 avx512f avx512_vnni", False),  # bf16 would be emulated
        ("fpu avx2 xamx_bf16x", False),  # a flag that merely contains the name
    ],
)
def test_precision_auto_finds_native_cpu_bf16_in_the_flags(tmp_path, monkeypatch, flags, native):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    assert cpu_has_bf16(cpuinfo) is native
    assert cpu_has_bf16(tmp_path / "absent") is False


@pytest.mark.parametrize(
    ("capability", "isa", "native"),
    [
        ("AVX2", None, False),
        ("AVX512", "AVX2", False),
        ("AVX512", "avx512_core_amx", True),
        ("AVX512", "ALL", True),
    ],
)
def test_precision_auto_is_fp32_where_torch_is_held_to_avx2(tmp_path, monkeypatch, capability, isa, native):
    """ATEN_CPU_CAPABILITY=avx2 (torch reports AVX2) or ONEDNN_MAX_CPU_ISA=AVX2 on an AMX machine: the
    AVX2-only path, as on most laptops, so fp32."""
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    if isa is None:
        monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    else:
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", isa)
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f amx_bf16 amx_tile\n")
    assert cpu_has_bf16(cpuinfo) is native
