"""benchmarks/curve.py on the small world: a size by the depth dial, trained to a budget with its
closed-book baseline, then a later call that adds sizes reuses what is done and marks a size trained
below the budget and one with its closed-book baseline alone."""

import importlib.util
import json
from pathlib import Path

import pytest
from conftest import MICRO
from test_evals import FAST_EVAL

from cogcore.core.io import DataError

_spec = importlib.util.spec_from_file_location(
    "curve", Path(__file__).resolve().parents[1] / "benchmarks" / "curve.py"
)
curve = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(curve)

# MICRO without its architecture: the depth dial sets that.
TRAINING = [o for o in MICRO if not o.startswith("student.arch.")]


def test_curve_trains_each_size_once_and_marks_a_smaller_budget(small_run, tmp_path):
    out = tmp_path / "curve"
    common = ["--run", str(small_run), "--out", str(out), "--steps", "4", "--per-type", "1"]
    extra = [*TRAINING, *FAST_EVAL, "eval.suites=[K,T]"]
    first = curve.main(["--depths", "1", *common, *extra])  # overrides after a one-value option
    board = out / "d1" / "evals" / "leaderboard.json"
    scored_at = board.stat().st_mtime_ns

    points = curve.main(
        ["--depths", "1", "2", "3", "--steps-at", "2=2", "--closed-book-only", "3"]
        + ["--closed-book-lrs", "0.02", *common, *extra]
    )
    assert board.stat().st_mtime_ns == scored_at  # d1 neither retrained nor rescored
    assert {k: v for k, v in points[0].items() if not k.startswith("closed_book")} == {
        k: v for k, v in first[0].items() if not k.startswith("closed_book")
    }
    small, big, memory = points
    assert small["params"] < big["params"]
    assert (small["trace_steps"], big["trace_steps"]) == (4, 2)
    assert big["tokens"] < small["tokens"]
    for p in (small, big):
        assert 0 <= p["T@1"] <= p["T"] <= 1
    assert not (out / "d3" / "student").exists() and memory["T"] is None and memory["params"] > big["params"]
    for p in points:
        assert set(p["closed_book_by_lr"]) == {"0.003", "0.02"}  # the config's rate and the one asked for
        best = p["closed_book_by_lr"][f"{p['closed_book_lr']:g}"]
        assert (
            p["closed_book_train"]
            == best["train"]
            == max(m["train"] for m in p["closed_book_by_lr"].values())
        )
        assert (out / f"d{p['depth']}" / "closed_book_lr0.02" / "evals" / "leaderboard.json").exists()
    saved = json.loads((out / "curve.json").read_text())
    assert saved["points"] == points
    rows = (out / "curve.md").read_text().splitlines()
    assert len(rows) == 5 and "| 2 (fewer) |" in rows[3] and "(fewer)" not in rows[2]
    assert "| no student |" in rows[4]
    assert (out / "curve.png").stat().st_size > 0

    curve.main(["--depths", "1", *common, *extra, "eval.generation.retries=0"])
    assert board.stat().st_mtime_ns != scored_at  # another eval config: scored again

    # another row length than d1's student: refused, not mixed into the curve, nothing deleted
    other_rows = [o for o in extra if not o.startswith("distill.seq_len=")] + ["distill.seq_len=512"]
    with pytest.raises(DataError, match="distill.seq_len=768"):
        curve.main(["--depths", "1", *common, *other_rows])
    assert json.loads((out / "d1" / "student" / "manifest.json").read_text())["seq_len"] == 768
