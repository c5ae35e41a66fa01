"""Recall@10 against flat of the 100k hnsw and ivf_pq indexes of benchmarks/scale.sh, as efSearch and nprobe
change (search-time settings: no rebuild). Run from the repository root after scale.sh:

    OMP_NUM_THREADS=1 python benchmarks/recall_sweep.py
"""

import json
import sys
import time

import faiss
import numpy as np

sys.path.insert(0, "benchmarks")
from pathlib import Path

from scale import cfg_for, texts_of

from cogcore.retrieval.embedder import embed, load_embedder

S = Path("runs/scale")
rng = np.random.default_rng(2)
queries = [" ".join(t.split()[: int(rng.integers(4, 10))]) for t in texts_of(S / "c100k.jsonl", 128)]
model = load_embedder(cfg_for("index").retriever)
v = embed(model, queries)


def load(kind):
    return faiss.read_index(str(next((S / f"100k-{kind}").rglob("dense.faiss"))))


_, truth = load("flat").search(v, 10)


def rec(ids):
    return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, truth, strict=True)]))


h = load("hnsw")
for ef in (64, 256, 1024):
    h.hnsw.efSearch = ef
    t = time.perf_counter()
    _, ids = h.search(v, 10)
    dt = (time.perf_counter() - t) / len(v) * 1000
    print(json.dumps({"hnsw_ef": ef, "recall": rec(ids), "ms_per_query_batched": round(dt, 2)}))
p = load("ivf_pq")
for nprobe in (16, 64, 256):
    faiss.extract_index_ivf(p).nprobe = nprobe
    t = time.perf_counter()
    _, ids = p.search(v, 10)
    dt = (time.perf_counter() - t) / len(v) * 1000
    print(json.dumps({"ivf_pq_nprobe": nprobe, "recall": rec(ids), "ms_per_query_batched": round(dt, 2)}))
