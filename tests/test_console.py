"""`cogcore pipeline` (make demo) end to end: world -> index -> traces -> distill -> eval, and what it
prints: each stage's progress and time, the leaderboard, and no log noise from the libraries underneath
(no DEBUG or INFO records, no warning repeated per checkpoint, no deprecation warnings from cogcore's own
calls). Runs the real CLI in a subprocess, as a user does, on a tiny config."""

import json
import os
import re
import subprocess
import sys

from conftest import MICRO, SMALL_WORLD

# DEBUG and INFO records of anyone, warnings of the libraries (cogcore's own warnings are for the user),
# Python warnings, accelerate's line per checkpoint
NOISE = re.compile(
    r"\]\[[\w.]+\]\[(DEBUG|INFO)\]|\]\[(?!cogcore\.)[\w.]+\]\[WARNING\]"
    r"|FutureWarning|DeprecationWarning|UserWarning|Saving current state"
)


def test_the_pipeline_runs_every_stage_and_prints_times_the_leaderboard_and_no_noise(tmp_path):
    overrides = [
        *SMALL_WORLD,
        "world.validation_worlds=1",
        *MICRO,
        "distill.seq_len=1024",  # every trace fits: no warning of cogcore's own either
        "distill.max_steps=24",
        "distill.ckpt_every=8",  # a few checkpoints: their per-save log lines are what must not show
        "distill.eval_every=8",
        "eval.limit=4",
        "eval.generation.retries=0",
        "eval.closed_book.distill.epochs=1",
        "eval.closed_book.score_training_worlds=4",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "cogcore.core.cli", "pipeline", f"run_dir={tmp_path}", *overrides],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    printed = done.stdout + done.stderr
    assert done.returncode == 0, printed[-3000:]
    noise = [line for line in re.split(r"[\r\n]", printed) if NOISE.search(line)]
    assert not noise, "\n".join(noise[:10])
    for stage in ("world", "index", "traces", "distill", "eval"):
        assert f"== {stage}\n" in done.stdout
        assert re.search(rf"^== {stage}: \d+ (s|min \d+ s)$", done.stdout, re.M), stage
    times = json.loads((tmp_path / "logs" / "pipeline_times.json").read_text())
    assert set(times) == {"world", "index", "traces", "distill", "eval", "total"}
    assert (
        "| system | K | R@1 | R | T@1 | T | D | recall@5 | G | tries (T) | params | questions/s |"
        in done.stdout
    )
    assert done.stdout.rstrip().splitlines()[-1].startswith("pipeline: ")
    board = json.loads((tmp_path / "evals" / "leaderboard.json").read_text())
    assert board["systems"][0]["name"] == "oracle" and board["systems"][0]["scores"]["T"] == 1.0
    assert board["contamination"] == {
        "n": 10,
        "questions": 4,
        "leaked": 0,
        "share": 0.0,
        "leaked_in_user_turns": 0,
        "exact_duplicates": 0,
    }
