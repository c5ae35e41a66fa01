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
    from cogcore.core.world import world
    from cogcore.distill.traces import traces
    from cogcore.retrieval.index import index

    run_dir = tmp_path_factory.mktemp("small_run")
    world(make_cfg("world", run_dir, *SMALL_WORLD))
    index(make_cfg("index", run_dir))
    traces(make_cfg("traces", run_dir))
    return run_dir
