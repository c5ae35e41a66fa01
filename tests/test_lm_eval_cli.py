"""The README's lm-eval command works as written on a fresh run: the wrapper exports the cogcore tasks into
the `--include_path` of a run that has none yet."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tiny_chat import tiny_llama, tiny_tokenizer

from cogcore.evals.lm_eval_tasks import tasks_for_command_line


def test_the_wrapper_exports_a_fresh_runs_tasks_before_lm_eval_runs(small_run, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "world").symlink_to(small_run / "world")
    student = run_dir / "student"
    tiny_llama(tiny_tokenizer(student)).save_pretrained(student)
    tasks = run_dir / "evals" / "lm_eval" / "tasks"
    out = run_dir / "evals" / "lm_eval" / "results.json"
    command = [sys.executable, "-m", "cogcore.evals.lm_eval_cli", "--model", "cogcore", "--device", "cpu"]
    command += ["--model_args", f"pretrained={student},search=unavailable,max_new_tokens=8"]
    command += [
        "--include_path",
        str(tasks),
        "--tasks",
        "cogcore_K",
        "--limit",
        "2",
        "--output_path",
        str(out),
    ]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert (
        f"exported the cogcore tasks over {run_dir / 'world' / 'questions' / 'heldout.jsonl'}"
        in done.stderr
    )
    assert {"cogcore.yaml", "cogcore_K.yaml", "cogcore_T.yaml"} <= {p.name for p in tasks.iterdir()}
    [written] = out.parent.glob("results_*.json")
    assert "exact_match,answer" in json.loads(written.read_text())["results"]["cogcore_K"]
    # Tasks already there are left as they are; a folder that is no run's task folder is never written.
    assert tasks_for_command_line(["--include_path", str(tasks)]) is None
    assert tasks_for_command_line([f"--include_path={tmp_path / 'mine'}"]) is None
    assert not (tmp_path / "mine").exists()
