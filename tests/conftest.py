"""Shared fixtures: configs composed exactly as the CLI composes them, and one small world, index and
set of traces built once per test session (each job called as the plain function it is)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_module


def make_cfg(job: str, run_dir: str | Path, *overrides: str):
    """The config `cogcore <job> run_dir=<run_dir> <overrides>` would run with."""
    with initialize_config_module("cogcore.conf", version_base=None):
        return compose(config_name=job, overrides=[f"run_dir={run_dir}", *overrides])


# A few training worlds and two held-out ones: enough questions of every type to test on, small
# enough to index in seconds.
SMALL_WORLD = ("world=tiny", "world.train_worlds=8", "world.heldout_worlds=2")


@pytest.fixture(scope="session")
def small_run(tmp_path_factory) -> Path:
    """world -> index -> traces on the small world, built once per session; tests must not modify it."""
    from cogcore.core.worlds.world import world
    from cogcore.distill.traces import traces
    from cogcore.retrieval.index import index

    run_dir = tmp_path_factory.mktemp("small_run")
    world(make_cfg("world", run_dir, *SMALL_WORLD))
    index(make_cfg("index", run_dir))
    traces(make_cfg("traces", run_dir))
    return run_dir


# A student of 30K parameters: a training step takes milliseconds.
MICRO = (
    "student.vocab_size=512",
    "student.arch.hidden_size=32",
    "student.arch.intermediate_size=64",
    "student.arch.num_hidden_layers=2",
    "student.arch.num_attention_heads=4",
    "student.arch.num_key_value_heads=2",
    "distill.seq_len=768",
    "distill.global_batch=4",
    "distill.micro_batch=2",
    "distill.warmup_steps=2",
    "distill.copy_drills.warmup_steps=2",
    "distill.copy_drills.rows=2",
    "distill.copy_drills.row_len=64",
    "distill.copy_drills.max_len=24",  # a drill (bos, run, run) fits a 64-token row
    "distill.precision=no",  # fp32 on every machine: exact-resume and multi-process comparisons
)

# MICRO trained for about 15 s on the small run's traces: a real checkpoint for end-to-end tests, which
# has picked up some of the chat format and none of the facts.
TINY_STUDENT = (
    *MICRO,
    "distill.lr=1e-2",
    "distill.max_steps=150",
    "distill.ckpt_every=1000",
    "distill.eval_every=1000",
)


@pytest.fixture(scope="session")
def tiny_student(small_run, tmp_path_factory) -> Path:
    """A copy of the small run (world, index, traces) plus `student/`, trained once per session."""
    import shutil

    from cogcore.distill.train import distill

    run_dir = tmp_path_factory.mktemp("tiny_student")
    for stage in ("world", "index", "traces"):
        shutil.copytree(small_run / stage, run_dir / stage)
    distill(make_cfg("distill", run_dir, *TINY_STUDENT))
    return run_dir
