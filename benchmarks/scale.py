"""cogcore's index at 100k and 1M passages: build time and memory, search latency, recall against flat, and
the overhead of cogcore's Retriever over calling the encoder and FAISS directly.

    python benchmarks/scale.py corpus  --n 100000 --out runs/scale/c100k.jsonl
    python benchmarks/scale.py encoder --corpus runs/scale/c100k.jsonl --n 2048 --out runs/scale/real.npy
    /usr/bin/time -v python benchmarks/scale.py build --corpus runs/scale/c100k.jsonl --kind hnsw \\
        --run-dir runs/scale/100k-hnsw --vectors runs/scale/real.npy
    python benchmarks/scale.py search --corpus runs/scale/c100k.jsonl --flat runs/scale/100k-flat \\
        --approx runs/scale/100k-hnsw runs/scale/100k-ivf_pq

Corpora are FlashRAG jsonl, 100 words a passage, words drawn Zipf-like from a 50k-word vocabulary.
Encoding a million 100-word passages with MiniLM on 2 CPU cores takes hours, so `build --vectors` runs
every step of `cogcore index corpus.path=...` (passage store, IVF training on a sample, adding shard by
shard, BM25, checksums) except the encoder: the embedding shards are made from `encoder`'s real MiniLM
vectors of a subset of the corpus (each vector the normalised sum of two real ones plus noise), and the
encoder's time is reported apart, from its measured passages/s.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_module


def cfg_for(job: str, *overrides: str):
    with initialize_config_module("cogcore.conf", version_base=None):
        return compose(job, overrides=list(overrides))


def make_corpus(n: int, out: Path, words: int = 100, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    vocab = ["".join(rng.choice(letters, rng.integers(3, 10))) for _ in range(50_000)]
    vocab = np.array(vocab)
    p = 1.0 / np.arange(1, len(vocab) + 1)  # Zipf: a few words everywhere, most rare
    p /= p.sum()
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as f:
        for start in range(0, n, 10_000):
            rows = min(10_000, n - start)
            ids = rng.choice(len(vocab), size=(rows, words + 2), p=p)
            for i, row in enumerate(ids):
                title = f"{vocab[row[0]].title()} {vocab[row[1]].title()} {start + i}"
                text = " ".join(vocab[row[2:]])
                f.write(json.dumps({"id": str(start + i), "contents": f'"{title}"\n{text}'}) + "\n")


def texts_of(corpus: Path, n: int) -> list[str]:
    from cogcore.retrieval.corpus import split_contents

    out = []
    with corpus.open() as f:
        for line, _ in zip(f, range(n), strict=False):
            title, text = split_contents(json.loads(line)["contents"])
            out.append(f"{title}: {text}")
    return out


def encoder(corpus: Path, n: int, out: Path) -> None:
    """Passages/s of cogcore's embed against sentence-transformers' encode on the same texts."""
    from cogcore.retrieval.embedder import embed, load_embedder

    texts = texts_of(corpus, n)
    model = load_embedder(cfg_for("index").retriever)
    embed(model, texts[:64], role="passage")  # warm-up
    t = time.perf_counter()
    direct = model.encode(texts, batch_size=64, normalize_embeddings=True)
    t_direct = time.perf_counter() - t
    t = time.perf_counter()
    ours = embed(model, texts, 64, role="passage")
    t_ours = time.perf_counter() - t
    assert np.allclose(direct, ours, atol=1e-5)
    np.save(out, ours)
    print(json.dumps({"passages": n, "direct_per_s": n / t_direct, "cogcore_per_s": n / t_ours}))


def build(corpus: Path, kind: str, run_dir: Path, vectors: Path | None, extra: list[str]) -> None:
    from cogcore.retrieval import index as index_module

    cfg = cfg_for(
        "index", f"run_dir={run_dir}", f"corpus.path={corpus}", f"retriever.dense.kind={kind}", *extra
    )
    if vectors is not None:
        real = np.load(vectors)
        rng = np.random.default_rng(1)

        def synthetic_shards(store, folder, rcfg):
            folder.mkdir(parents=True, exist_ok=True)
            n, size = len(store), rcfg.shard_size
            paths = index_module._shard_paths(folder, n, size)
            for i, path in enumerate(paths):
                rows = min(size, n - i * size)
                a, b = rng.integers(len(real), size=(2, rows))
                v = real[a] + 0.7 * real[b] + rng.normal(0, 0.03, (rows, real.shape[1])).astype(np.float32)
                v /= np.linalg.norm(v, axis=1, keepdims=True)
                np.save(path, v.astype(np.float32))
            return paths

        index_module.embed_shards = synthetic_shards
    t = time.perf_counter()
    index_module.index(cfg)
    print(json.dumps({"kind": kind, "build_s": time.perf_counter() - t, "run_dir": str(run_dir)}))


def percentiles(seconds: list[float]) -> dict:
    ms = np.array(seconds) * 1000
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
    }


def latency(search, queries: list[str], batch: int) -> dict:
    times = []
    for start in range(0, len(queries), batch):
        t = time.perf_counter()
        search(queries[start : start + batch])
        times.append(time.perf_counter() - t)
    return percentiles(times)


def search_bench(corpus: Path, flat: Path, approx: list[Path], n_queries: int, out: Path) -> None:
    from cogcore.retrieval.embedder import embed
    from cogcore.retrieval.retriever import Retriever

    rng = np.random.default_rng(2)
    queries = [" ".join(t.split()[: int(rng.integers(4, 10))]) for t in texts_of(corpus, n_queries)]
    rng.shuffle(queries)
    results = {}
    dense = cfg_for("index", "retriever=dense").retriever
    exact = Retriever.load(flat / "index", dense)
    vectors = embed(exact.embedder, queries)
    _, truth = exact.collections["corpus"].dense.search(vectors, 10)
    for path in [flat, *approx]:
        r = exact if path == flat else Retriever.load(path / "index", dense)
        manifest = r.manifest
        index = r.collections["corpus"].dense
        _, ids = index.search(vectors, 10)
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, truth, strict=True)])
        single = latency(lambda q, r=r: r.search_batch(q, 10), queries, 1)
        batch = latency(lambda q, r=r: r.search_batch(q, 10), queries, 64)
        # The same work without cogcore: the encoder, then FAISS, on the same queries.
        direct_single = latency(lambda q, r=r, i=index: i.search(embed(r.embedder, q), 10), queries, 1)
        t = time.perf_counter()
        for q in queries:
            r.search_batch([q], 10)
        ours = time.perf_counter() - t
        t = time.perf_counter()
        for q in queries:
            index.search(r.embedder.encode_query([q], normalize_embeddings=True), 10)
        direct = time.perf_counter() - t
        results[f"{manifest['dense']['kind']}"] = {
            "recall@10_vs_flat": round(float(recall), 4),
            "single": single,
            "batch64": batch,
            "direct_single": direct_single,
            "overhead": round(ours / direct - 1, 4),
            "count": manifest["count"],
        }
        print(json.dumps({manifest["dense"]["kind"]: results[manifest["dense"]["kind"]]}), flush=True)
    lexical = Retriever.load(flat / "index", cfg_for("index", "retriever=bm25").retriever)
    results["bm25"] = {
        "single": latency(lambda q: lexical.search_batch(q, 10), queries, 1),
        "batch64": latency(lambda q: lexical.search_batch(q, 10), queries, 64),
    }
    print(json.dumps({"bm25": results["bm25"]}))
    out.write_text(json.dumps(results, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["corpus", "encoder", "build", "search"])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--corpus", type=Path)
    parser.add_argument("--kind", default="flat")
    parser.add_argument("--run-dir", type=Path)
    parser.add_argument("--vectors", type=Path)
    parser.add_argument("--flat", type=Path)
    parser.add_argument("--approx", type=Path, nargs="*", default=[])
    parser.add_argument("--queries", type=int, default=256)
    parser.add_argument("--set", nargs="*", default=[], help="more `cogcore index` overrides")
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.what == "corpus":
        make_corpus(args.n, args.out)
    elif args.what == "encoder":
        encoder(args.corpus, args.n, args.out)
    elif args.what == "build":
        build(args.corpus, args.kind, args.run_dir, args.vectors, args.set)
    else:
        search_bench(args.corpus, args.flat, args.approx, args.queries, args.out)


if __name__ == "__main__":
    main()
