"""`cogcore pipeline`: every stage in order on one config, each reading the last one's artifact.

The stages are the same plain job functions the CLI runs one at a time; a stage whose artifact is
already up to date for this config is skipped (or resumed, for traces), so a re-run costs little.
"""

from __future__ import annotations

from omegaconf import DictConfig

STAGES = ("world", "index", "traces", "distill", "eval")


def pipeline(cfg: DictConfig) -> None:
    from cogcore.core.cli import job_function

    for stage in STAGES:
        print(f"== {stage}")
        job_function(stage)(cfg)
