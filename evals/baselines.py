"""The closed-book baseline: the student's architecture trained on question -> answer pairs of training
worlds, with no tool, so whatever it answers comes from its weights. It memorises the worlds it saw and
has nothing to say about a new one: the contrast K on training worlds vs K on the held-out world.

It is trained by the same trainer as the student (`distill`), on traces with no search, in
`<run_dir>/baselines/closed_book/`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from cogcore.core.io import DataError, atomic_write_text, read_jsonl
from cogcore.core.stage import Decision, decide
from cogcore.core.tools import ANSWER_PREFIX
from cogcore.evals.systems import CLOSED_BOOK_PROMPT, closed_book_question


def closed_book_questions(run_dir: Path, worlds: int) -> list[dict]:
    """The training questions of the first `worlds` training worlds (the ones the baseline memorises)."""
    path = run_dir / "world" / "questions" / "train.jsonl"
    if not path.exists():
        raise DataError(f"{path}: no training questions; run `cogcore world run_dir={run_dir}` first")
    questions = read_jsonl(path)
    keep = sorted({q["world"] for q in questions})[:worlds]
    return [q for q in questions if q["world"] in keep]


def closed_book_trace(question: dict) -> dict:
    return {
        "id": question["id"],
        "messages": [
            {"role": "system", "content": CLOSED_BOOK_PROMPT},
            {"role": "user", "content": closed_book_question(question)},
            {"role": "assistant", "content": f"{ANSWER_PREFIX} {question['answers'][0]}"},
        ],
        "metadata": {
            "question": question["question"],
            "type": question["type"],
            "answers": question["answers"],
            "teacher": "closed_book",
            "world": question["world"],
            "split": question["split"],
        },
    }


def train_closed_book(cfg: DictConfig) -> Path:
    """Train (or resume, or reuse) the closed-book baseline; its HF checkpoint folder."""
    from cogcore.distill.train import distill, settings_of

    run_dir = Path(cfg.run_dir)
    base = run_dir / "baselines" / "closed_book"
    questions = closed_book_questions(run_dir, cfg.eval.closed_book.worlds)
    text = "".join(json.dumps(closed_book_trace(q)) + "\n" for q in questions)
    traces = base / "traces" / "traces.jsonl"
    sub = OmegaConf.merge(cfg, {"run_dir": str(base), "distill": cfg.eval.closed_book.distill})
    settings = settings_of(sub)
    student = base / "student"
    if not (traces.exists() and traces.read_text() == text):  # other questions: start over, not resume
        for stale in (student, base / "traces"):
            if stale.exists():
                shutil.rmtree(stale)
        traces.parent.mkdir(parents=True)
        atomic_write_text(traces, text)
    elif decide(student / "manifest.json", settings, key="settings", force=cfg.force) is Decision.UP_TO_DATE:
        print(f"closed_book: up to date in {student}")
        return student
    return distill(sub)
