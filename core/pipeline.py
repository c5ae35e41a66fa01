"""`cogcore pipeline`: every stage in order on one config, each reading the last one's artifact.

The stages are the same plain job functions the CLI runs one at a time; a stage whose artifact is
already up to date for this config is skipped (or resumed, for traces), so a re-run costs little. Each
stage's wall time is printed as it ends, and all of them at the end, after the leaderboard, and kept in
<run_dir>/logs/pipeline_times.json.
"""

from __future__ import annotations

import time
from pathlib import Path

from omegaconf import DictConfig

from cogcore.core.io import atomic_write_json

STAGES = ("world", "index", "traces", "distill", "eval")


def duration(seconds: float) -> str:
    """3 s, 2 min 5 s, 1 h 2 min."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def pipeline(cfg: DictConfig) -> None:
    from cogcore.core.cli import job_function

    times = {}
    started = time.perf_counter()
    for stage in STAGES:
        print(f"== {stage}", flush=True)
        begun = time.perf_counter()
        job_function(stage)(cfg)
        times[stage] = time.perf_counter() - begun
        print(f"== {stage}: {duration(times[stage])}", flush=True)
    total = time.perf_counter() - started
    atomic_write_json(Path(cfg.run_dir) / "logs" / "pipeline_times.json", {**times, "total": total})
    spent = ", ".join(f"{stage} {duration(seconds)}" for stage, seconds in times.items())
    print(f"pipeline: {duration(total)} ({spent}); leaderboard in {Path(cfg.run_dir) / 'evals'}")
