"""`cogcore search`: the ranked passages of an index for one query, as text or as one JSON list."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from omegaconf import DictConfig

from cogcore.retrieval.retriever import Retriever


def search(cfg: DictConfig) -> list[dict]:
    index = Path(cfg.index).expanduser() if cfg.index else Path(cfg.run_dir) / "index"
    retriever = Retriever.load(index, cfg.retriever)
    collection = cfg.collection
    if collection is None and len(retriever.collections) > 1:
        names = list(retriever.collections)
        raise SystemExit(
            f"cogcore search: {index} holds {len(names)} collections ({', '.join(names[:3])}, ...); "
            "name one with collection=<name>"
        )
    hits = retriever.search(str(cfg.query), cfg.k, collection)
    if cfg.json:
        print(json.dumps(hits, ensure_ascii=False))
    else:
        for rank, hit in enumerate(hits, 1):
            print(f"{rank}. [{hit['id']}] {hit['title']}  (score {hit['score']:.4f})")
            print(textwrap.indent(textwrap.fill(hit["text"], 100), "   "))
    return hits
