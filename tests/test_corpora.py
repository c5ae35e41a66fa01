"""Corpora and question sets in the formats researchers have (FlashRAG jsonl, jsonl by field names,
`datasets` folders, parquet), the streamed index (resume after kill -9, checksums), and `cogcore search`."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import make_cfg

from cogcore.core.io import DataError, iter_qa
from cogcore.retrieval import index as index_module
from cogcore.retrieval.corpus import iter_passages
from cogcore.retrieval.embedder import load_embedder
from cogcore.retrieval.index import index
from cogcore.retrieval.retriever import Retriever
from cogcore.retrieval.search import search

CITIES = ["Paris", "Lima", "Oslo", "Cairo", "Quito", "Hanoi", "Dakar", "Riga"]


def flashrag_rows(n=40):
    """FlashRAG-shaped passages: `contents` is the quoted title, a newline, then the text."""
    rows = []
    for i in range(n):
        city = CITIES[i % len(CITIES)]
        title = f"Company {i}"
        text = f"Company {i} was founded by founder{i} in {city} in the year {1800 + i}."
        rows.append({"id": str(i), "contents": f'"{title}"\n{text}'})
    return rows


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_flashrag_corpus_is_indexed_and_searched(tmp_path, capsys):
    corpus = write_jsonl(tmp_path / "wiki.jsonl", flashrag_rows())
    cfg = make_cfg("index", tmp_path, f"corpus.path={corpus}", "retriever.shard_size=16")
    index(cfg)
    hits = search(make_cfg("search", tmp_path, "query=who founded Company 17", "k=3", "json=true"))
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == hits and hits[0]["id"] == "17"
    assert hits[0]["title"] == "Company 17" and hits[0]["text"].startswith("Company 17 was founded")
    assert set(hits[0]) == {"id", "title", "text", "score"}
    search(make_cfg("search", tmp_path, "query=who founded Company 17", "k=2"))
    assert "1. [17] Company 17" in capsys.readouterr().out


@pytest.mark.parametrize("form", ["jsonl_fields", "hf", "parquet"])
def test_other_corpus_formats_read_the_same_passages(tmp_path, form):
    import datasets

    rows = [{"doc": str(i), "name": f"T{i}", "body": f"text {i}"} for i in range(5)]
    if form == "jsonl_fields":
        path = write_jsonl(tmp_path / "c.jsonl", rows)
    else:
        ds = datasets.Dataset.from_list(rows)
        path = tmp_path / ("c_hf" if form == "hf" else "c.parquet")
        ds.save_to_disk(str(path)) if form == "hf" else ds.to_parquet(str(path))
    cfg = make_cfg(
        "index",
        tmp_path,
        f"corpus.path={path}",
        "corpus.fields.id=doc",
        "corpus.fields.title=name",
        "corpus.fields.text=body",
    )
    assert list(iter_passages(cfg.corpus)) == [
        {"id": str(i), "title": f"T{i}", "text": f"text {i}"} for i in range(5)
    ]


def test_bad_corpus_lines_are_named(tmp_path):
    corpus = tmp_path / "wiki.jsonl"
    corpus.write_text('{"id": "0", "contents": "\\"A\\"\\nok"}\n{"id": "1", "body": "x"}\n')
    cfg = make_cfg("index", tmp_path, f"corpus.path={corpus}")
    with pytest.raises(DataError, match=r"wiki\.jsonl:2: needs a string field 'contents'.*corpus\.fields"):
        list(iter_passages(cfg.corpus))
    corpus.write_text('{"id": "0", "contents": "\\"A\\"\\nok"}\n{"id": \n')
    with pytest.raises(DataError, match=r"wiki\.jsonl:2: not valid JSON"):
        index(cfg)


def test_binary_files_in_docs_are_skipped_named_and_counted(tmp_path, capsys):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "note.txt").write_text("The tomatoes were planted on May 3.")
    (docs / "program.txt").write_bytes(b"\x7fELF\x02\x01\x01" + bytes(range(256)) * 64)  # an ELF binary
    (docs / "noise.md").write_bytes(np.random.default_rng(0).bytes(4096))
    cfg = make_cfg("index", tmp_path, f"docs={docs}")
    index(cfg)
    err = capsys.readouterr().err
    assert "skipped" in err and "program.txt" in err and "noise.md" in err
    manifest = json.loads((tmp_path / "index" / "manifest.json").read_text())
    assert manifest["count"] == 1 and sorted(manifest["skipped_files"]) == ["noise.md", "program.txt"]
    ids = [p["id"] for p in Retriever.load(tmp_path / "index", cfg.retriever).passages_by_id().values()]
    assert ids == ["note.txt#0"]


def test_a_damaged_index_file_is_named_with_the_fix(tmp_path):
    corpus = write_jsonl(tmp_path / "wiki.jsonl", flashrag_rows(10))
    cfg = make_cfg("index", tmp_path, f"corpus.path={corpus}")
    index(cfg)
    faiss_file = next((tmp_path / "index").rglob("dense.faiss"))
    faiss_file.write_bytes(faiss_file.read_bytes()[:100])  # truncated, as a full disk leaves it
    with pytest.raises(DataError, match=r"dense\.faiss: has 100 bytes.*force=true"):
        Retriever.load(tmp_path / "index", cfg.retriever)
    with pytest.raises(DataError, match=r"dense\.faiss: has 100 bytes.*force=true"):
        index(cfg)  # never "up to date"
    data = bytearray(faiss_file.read_bytes())
    index(make_cfg("index", tmp_path, f"corpus.path={corpus}", "force=true"))
    data = bytearray(faiss_file.read_bytes())
    data[-1] ^= 1  # same size, one bit flipped
    faiss_file.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"dense\.faiss: has another sha256.*force=true"):
        Retriever.load(tmp_path / "index", cfg.retriever)


@pytest.mark.parametrize("kind", ["hnsw", "ivf", "ivf_pq"])
def test_approximate_kinds_find_the_passage(tmp_path, kind):
    corpus = write_jsonl(tmp_path / "wiki.jsonl", flashrag_rows(200))
    cfg = make_cfg(
        "index",
        tmp_path,
        f"corpus.path={corpus}",
        "retriever=dense",
        f"retriever.dense.kind={kind}",
        "retriever.dense.nprobe=4",
        "retriever.shard_size=64",
    )
    index(cfg)
    manifest = json.loads((tmp_path / "index" / "manifest.json").read_text())
    assert manifest["dense"]["kind"] == kind and manifest["count"] == 200
    hits = Retriever.load(tmp_path / "index", cfg.retriever).search("Company 123 founded by founder123", k=5)
    assert "123" in [p["id"] for p in hits]


def test_prompts_reach_the_embedder(tmp_path):
    """e5-style prompts, tried on the packaged MiniLM: passages are embedded as `passage: <title: text>`
    and queries as `query: <query>`."""
    corpus = write_jsonl(tmp_path / "wiki.jsonl", flashrag_rows(8))
    prompts = ("+retriever.prompts.query='query: '", "+retriever.prompts.passage='passage: '")
    cfg = make_cfg("index", tmp_path, f"corpus.path={corpus}", "retriever=dense", *prompts)
    index(cfg)
    retriever = Retriever.load(tmp_path / "index", cfg.retriever)
    plain = load_embedder(make_cfg("index", tmp_path).retriever)
    passage = retriever.collections["corpus"].passages[3]
    want = plain.encode(f"passage: {passage['title']}: {passage['text']}", normalize_embeddings=True)
    got = retriever.collections["corpus"].dense.reconstruct(3)
    assert np.allclose(got, want, atol=1e-5)
    query = plain.encode("query: founder3", normalize_embeddings=True)
    hit = next(p for p in retriever.search("founder3", k=8) if p["id"] == "3")
    assert hit["score"] == pytest.approx(float(query @ want), abs=1e-5)
    with pytest.raises(DataError, match="built with prompts"):
        Retriever.load(tmp_path / "index", make_cfg("index", tmp_path, "retriever=dense").retriever)
    e5 = make_cfg("index", tmp_path, "retriever/embedder=e5_base").retriever
    assert dict(e5.prompts) == {"query": "query: ", "passage": "passage: "}
    with pytest.raises(DataError, match="retriever.embedder_path"):
        load_embedder(e5)


def test_killed_build_resumes_from_its_last_shard(tmp_path, monkeypatch):
    corpus = write_jsonl(tmp_path / "wiki.jsonl", flashrag_rows(3000))
    overrides = [
        f"corpus.path={corpus}",
        "retriever=dense",
        "retriever.shard_size=100",
        "retriever.batch_size=16",
    ]
    command = [sys.executable, "-m", "cogcore.core.cli", "index", f"run_dir={tmp_path}", *overrides]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shards = tmp_path / ".index.build" / "shards"
    deadline = time.time() + 240
    while len(list(shards.glob("*.npy")) if shards.exists() else []) < 3:
        assert proc.poll() is None and time.time() < deadline, "the build ended before it could be killed"
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    kept = len(list(shards.glob("*.npy")))
    assert 3 <= kept < 30 and not (tmp_path / "index").exists()

    encoded = []
    real = index_module.embed
    monkeypatch.setattr(
        index_module, "embed", lambda m, texts, *a, **k: encoded.append(len(texts)) or real(m, texts, *a, **k)
    )
    cfg = make_cfg("index", tmp_path, *overrides)
    index(cfg)
    assert sum(encoded) == 3000 - 100 * kept  # only the shards the killed build had not written
    retriever = Retriever.load(tmp_path / "index", cfg.retriever)
    store, vectors = retriever.collections["corpus"].passages, retriever.collections["corpus"].dense
    rows = [0, 100 * kept - 1, 100 * kept, 2999]  # both sides of the resume, in the right places
    want = load_embedder(cfg.retriever).encode(
        [store.texts(j, j + 1)[0] for j in rows], normalize_embeddings=True
    )
    assert np.allclose(np.stack([vectors.reconstruct(j) for j in rows]), want, atol=1e-5)
    assert [store[j]["id"] for j in rows] == [str(j) for j in rows]
    assert not (tmp_path / ".index.build").exists()


def flashrag_questions(tmp_path):
    rows = [
        {
            "id": "test_0",
            "question": "Where was Company 3 founded?",
            "golden_answers": ["Cairo", "Cairo, Egypt"],
        },
        {"id": "test_1", "question": "Who founded Company 5?", "golden_answers": ["founder5"]},
    ]
    return write_jsonl(tmp_path / "test.jsonl", rows), rows


def test_question_sets_in_flashrag_datasets_and_parquet_forms(tmp_path):
    import datasets

    path, rows = flashrag_questions(tmp_path)
    got = list(iter_qa(path))
    assert [q["answers"] for q in got] == [r["golden_answers"] for r in rows] and got[0]["id"] == "test_0"
    ds = datasets.Dataset.from_list(rows)
    ds.save_to_disk(str(tmp_path / "qa_hf"))
    ds.to_parquet(str(tmp_path / "qa.parquet"))
    for other in (tmp_path / "qa_hf", tmp_path / "qa.parquet"):
        assert [q["answers"] for q in iter_qa(other)] == [q["answers"] for q in got]
    renamed = [{"query": r["question"], "gold": r["golden_answers"]} for r in rows]
    named = list(iter_qa(write_jsonl(tmp_path / "named.jsonl", renamed), question="query", answers="gold"))
    assert [q["question"] for q in named] == [r["question"] for r in rows]
    datasets.Dataset.from_list([{"question": "Q", "golden_answers": []}]).to_parquet(
        str(tmp_path / "bad.parquet")
    )
    with pytest.raises(DataError, match=r"bad\.parquet:row 0: 'answers' must be a non-empty list"):
        list(iter_qa(tmp_path / "bad.parquet"))


def test_multi_process_encoding_gives_the_same_index(tmp_path):
    corpus = write_jsonl(tmp_path / "wiki.jsonl", flashrag_rows(24))
    common = (f"corpus.path={corpus}", "retriever=dense", "retriever.shard_size=10")
    one = make_cfg("index", tmp_path / "one", *common)
    two = make_cfg("index", tmp_path / "two", *common, "retriever.encode_devices=[cpu,cpu]")
    index(one)
    index(two)
    a = Retriever.load(tmp_path / "one" / "index", one.retriever).collections["corpus"].dense
    b = Retriever.load(tmp_path / "two" / "index", two.retriever).collections["corpus"].dense
    assert np.allclose(a.reconstruct_n(0, 24), b.reconstruct_n(0, 24), atol=1e-5)
