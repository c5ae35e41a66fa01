import json

import pytest
from conftest import make_cfg

from cogcore.core.io import DataError, read_jsonl
from cogcore.retrieval import bm25
from cogcore.retrieval.documents import chunk_words, folder_passages
from cogcore.retrieval.index import index
from cogcore.retrieval.retriever import Retriever


def lookup_recall(retriever, questions, k=5):
    qs = [q for q in questions if q["type"] == "lookup"]
    results = retriever.search_batch([q["question"] for q in qs], k, [q["world"] for q in qs])
    hits = [
        set(q["gold_passages"]) <= {p["id"] for p in ranked} for q, ranked in zip(qs, results, strict=True)
    ]
    return sum(hits) / len(hits)


@pytest.mark.parametrize("mode", ["hybrid", "dense", "bm25"])
def test_recall_at_5_on_heldout_lookups(small_run, mode):
    retriever = Retriever.load(
        small_run / "index", make_cfg("index", small_run, f"retriever={mode}").retriever
    )
    heldout = read_jsonl(small_run / "world" / "questions" / "heldout.jsonl")
    recall = lookup_recall(retriever, heldout)
    assert recall >= (0.95 if mode == "hybrid" else 0.8), recall


def test_round_trip_search_and_batch_agree(small_run):
    retriever = Retriever.load(small_run / "index", make_cfg("index", small_run).retriever)
    questions = read_jsonl(small_run / "world" / "questions" / "train.jsonl")
    world, other = sorted({q["world"] for q in questions})[:2]
    one = retriever.search("Where is the headquarters?", k=4, collection=world)
    assert len(one) == 4 and all(set(p) == {"id", "title", "text", "score"} for p in one)
    assert [p["score"] for p in one] == sorted((p["score"] for p in one), reverse=True)
    assert all(p["id"].startswith(f"{world}-") for p in one)  # a search never crosses worlds
    batch = retriever.search_batch(["Where is the headquarters?", "population"], 4, [world, other])
    assert batch[0] == one
    assert len(batch[1]) == 4 and all(p["id"].startswith(f"{other}-") for p in batch[1])


def test_loading_against_another_embedder_or_corpus_fails(small_run):
    cfg = make_cfg("index", small_run, "retriever.embedder=/models/other")
    with pytest.raises(DataError, match=r"built with embedder 'all-MiniLM-L6-v2'.*cogcore index run_dir="):
        Retriever.load(small_run / "index", cfg.retriever)
    with pytest.raises(DataError, match=r"another corpus.*cogcore index run_dir="):
        Retriever.load(small_run / "index", make_cfg("index", small_run).retriever, corpus_sha256="0" * 64)
    with pytest.raises(DataError, match=r"no index here"):
        Retriever.load(small_run / "nothing", cfg.retriever)


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_other_faiss_indexes(tmp_path, kind):
    (tmp_path / "docs").mkdir()
    for i in range(60):
        (tmp_path / "docs" / f"n{i}.txt").write_text(f"Note {i}: the code word of box {i} is w{i * 7}.")
    cfg = make_cfg(
        "index", tmp_path, f"docs={tmp_path / 'docs'}", "retriever=dense", f"retriever.dense.kind={kind}"
    )
    index(cfg)
    hits = Retriever.load(tmp_path / "index", cfg.retriever).search("code word of box 17", k=3)
    assert "n17.txt#0" in [p["id"] for p in hits]


def test_folder_of_documents_is_chunked_and_indexed(tmp_path):
    docs = tmp_path / "notes"
    (docs / "sub").mkdir(parents=True)
    (docs / "garden.md").write_text(
        "# Garden\n\nThe tomatoes were planted on May 3.\n\nBasil grows by the door."
    )
    (docs / "sub" / "long.txt").write_text(" ".join(f"w{i}" for i in range(300)))
    (docs / "facts.jsonl").write_text(
        json.dumps({"id": "f1", "title": "Car", "text": "The car is blue."}) + "\n"
    )
    (docs / "ignored.bin").write_bytes(b"\x00")
    passages = folder_passages(docs, words=120, overlap=30).passages
    ids = {p["id"] for p in passages}
    assert {"garden.md#0", "f1", "sub/long.txt#0", "sub/long.txt#1", "sub/long.txt#2"} <= ids
    assert next(p for p in passages if p["id"] == "garden.md#0")["title"] == "Garden"
    cfg = make_cfg("index", tmp_path, f"docs={docs}")
    index(cfg)
    retriever = Retriever.load(tmp_path / "index", cfg.retriever)
    assert retriever.search("when were the tomatoes planted", k=1)[0]["id"] == "garden.md#0"
    assert retriever.search("what colour is the car", k=1)[0]["id"] == "f1"


def test_chunks_overlap_and_bad_documents_are_named(tmp_path):
    chunks = chunk_words(" ".join(str(i) for i in range(250)), words=100, overlap=20)
    assert [c.split()[0] for c in chunks] == ["0", "80", "160"]
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"title": "no text"}\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:2: needs a string field 'text'"):
        folder_passages(tmp_path)
    with pytest.raises(DataError, match=r"not a folder"):
        folder_passages(tmp_path / "missing")


def test_crash_mid_build_leaves_no_index_that_loads(tmp_path, monkeypatch):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("alpha beta")
    cfg = make_cfg("index", tmp_path, f"docs={docs}")

    def crash(*args):
        raise RuntimeError("killed mid-build")

    monkeypatch.setattr(bm25, "save", crash)
    with pytest.raises(RuntimeError):
        index(cfg)
    assert not (tmp_path / "index").exists()
    with pytest.raises(DataError, match="no index here"):
        Retriever.load(tmp_path / "index", cfg.retriever)
