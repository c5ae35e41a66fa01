"""The Search-R1 / FlashRAG protocol as one command: a FlashRAG corpus and QA set, the student searching
the corpus's index with the top 3 passages, EM over golden_answers as Search-R1 computes it."""

import json
import shutil

import pytest
from conftest import TINY_STUDENT, make_cfg
from test_corpora import flashrag_rows, write_jsonl

from cogcore.core.io import read_jsonl
from cogcore.evals.run import evaluate
from cogcore.evals.scoring import search_r1_em
from cogcore.retrieval.index import index


@pytest.mark.parametrize(
    "prediction, golds, em",
    [
        ("The Eiffel Tower!", ["eiffel tower"], 1),  # articles, case and punctuation go
        ("an  apple", "Apple", 1),  # a bare string is one answer; whitespace collapses
        ("Paris, France", ["Paris"], 0),  # exact, not contained
        ("théâtre", ["theatre"], 0),  # no accent folding in Search-R1
        (None, ["x"], 0),  # no answer line
        ("1,000", ["1000"], 1),
    ],
)
def test_search_r1_em(prediction, golds, em):
    assert search_r1_em(prediction, golds) == em


def test_search_r1_protocol_end_to_end(tiny_student, tmp_path):
    wiki = tmp_path / "wiki"
    corpus = write_jsonl(tmp_path / "wiki.jsonl", flashrag_rows(40))
    index(make_cfg("index", wiki, f"corpus.path={corpus}", "retriever=dense"))
    qa = write_jsonl(
        tmp_path / "nq_test.jsonl",
        [
            {"id": f"test_{i}", "question": f"Who founded Company {i}?", "golden_answers": [f"founder{i}"]}
            for i in range(6)
        ],
    )
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_student, run_dir)
    cfg = make_cfg(
        "eval",
        run_dir,
        *TINY_STUDENT,
        "eval=search_r1",
        f"eval.questions={qa}",
        f"eval.index={wiki}/index",
        "retriever=dense",
        "eval.generation.max_new_tokens=160",
    )
    out = evaluate(cfg)
    board = json.loads((out / "leaderboard.json").read_text())
    [student] = board["systems"]
    samples = read_jsonl(out / "samples" / "student" / "T.jsonl")
    golds = {r["id"]: r["golden_answers"] for r in read_jsonl(qa)}
    assert len(samples) == 6 and set(golds) == {r["id"] for r in samples}
    want = sum(search_r1_em(r["prediction"], golds[r["id"]]) for r in samples) / 6
    assert student["scores"]["EM"] == pytest.approx(want)
    assert board["config"]["generation"]["k"] == 3 and board["config"]["suites"] == ["T"]
