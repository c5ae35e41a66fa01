"""Recall@1 and recall@k of the gold passage for held-out lookup questions, for dense, BM25 and hybrid.

    .venv/bin/python benchmarks/recall.py [--worlds 20] [--k 5] [--run-dir runs/bench-recall]

Builds held-out worlds of the default world config (no training worlds), indexes them once, and
searches every lookup question in its own world's collection with each retriever mode.
"""

from __future__ import annotations

import argparse
import json
import time

from hydra import compose, initialize_config_module

from cogcore.core.io import read_jsonl
from cogcore.core.worlds.world import world
from cogcore.retrieval.index import index
from cogcore.retrieval.retriever import Retriever


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worlds", type=int, default=20)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--run-dir", default="runs/bench-recall")
    args = parser.parse_args()

    run_dir = f"run_dir={args.run_dir}"
    with initialize_config_module("cogcore.conf", version_base=None):
        world(compose("world", [run_dir, "world.train_worlds=0", f"world.heldout_worlds={args.worlds}"]))
        index(compose("index", [run_dir]))
        questions = [
            q for q in read_jsonl(f"{args.run_dir}/world/questions/heldout.jsonl") if q["type"] == "lookup"
        ]
        results = {}
        for mode in ("dense", "bm25", "hybrid"):
            retriever = Retriever.load(
                f"{args.run_dir}/index", compose("index", [f"retriever={mode}"]).retriever
            )
            start = time.perf_counter()
            ranked = retriever.search_batch(
                [q["question"] for q in questions], args.k, [q["world"] for q in questions]
            )
            seconds = time.perf_counter() - start
            results[mode] = {"queries_per_s": round(len(questions) / seconds)}
            for k in sorted({1, args.k}):
                hits = sum(
                    set(q["gold_passages"]) <= {p["id"] for p in r[:k]}
                    for q, r in zip(questions, ranked, strict=True)
                )
                results[mode][f"recall@{k}"] = round(hits / len(questions), 3)
    print(json.dumps({"questions": len(questions), "worlds": args.worlds, "k": args.k, **results}, indent=2))


if __name__ == "__main__":
    main()
