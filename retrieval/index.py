"""`cogcore index`: embed and index a world's corpus (one collection per world) or a folder of documents.

Layout of `<run_dir>/index/`:
    manifest.json                 embedder, dim, count, corpus checksum, collections (written last)
    collections/<dir>/passages.jsonl, dense.faiss, bm25/
The whole folder is built under a temporary name and renamed into place, so a crash mid-build never
leaves an index that loads.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from cogcore.core.io import DataError, atomic_dir, atomic_write_json, sha256_file, write_jsonl
from cogcore.core.stage import Decision, decide
from cogcore.retrieval import bm25, dense
from cogcore.retrieval.documents import folder_passages, world_collections
from cogcore.retrieval.embedder import embed, load_embedder
from cogcore.retrieval.retriever import FORMAT


def passages_sha256(passages: list[dict]) -> str:
    digest = hashlib.sha256()
    for p in passages:
        digest.update(json.dumps([p["id"], p["title"], p["text"]]).encode() + b"\n")
    return digest.hexdigest()


def _dir_name(name: str, i: int) -> str:
    return f"{i:05d}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)[:60]}"


def settings_of(rcfg: DictConfig, corpus_sha256: str) -> dict:
    """What an index depends on: recorded among its manifest's fields, and matched to skip a rebuild."""
    return {
        "format": FORMAT,
        "embedder": rcfg.embedder,
        "corpus_sha256": corpus_sha256,
        "dense": OmegaConf.to_container(rcfg.dense, resolve=True),
    }


def build_index(
    collections: dict[str, list[dict]], out: str | Path, rcfg: DictConfig, source: str, corpus_sha256: str
) -> Path:
    """Embed every passage in one pass (batched, with a progress bar), then index each collection."""
    out = Path(out)
    names = list(collections)
    texts = [f"{p['title']}: {p['text']}" for n in names for p in collections[n]]
    if not texts:
        raise DataError(f"{source}: no passages to index")
    model = load_embedder(rcfg.embedder)
    vectors = embed(model, texts, batch_size=rcfg.batch_size, progress=True)
    with atomic_dir(out) as tmp:
        manifest_collections, start = {}, 0
        for i, name in enumerate(tqdm(names, desc="index", unit="collection", disable=len(names) < 10)):
            passages = collections[name]
            folder = tmp / "collections" / _dir_name(name, i)
            folder.mkdir(parents=True)
            write_jsonl(folder / "passages.jsonl", passages)
            span = slice(start, start + len(passages))  # this collection's rows of `texts` and `vectors`
            start = span.stop
            dense.save(
                dense.build(np.ascontiguousarray(vectors[span]), rcfg.dense), str(folder / "dense.faiss")
            )
            bm25.save(bm25.build(texts[span]), str(folder / "bm25"))
            manifest_collections[name] = {"dir": folder.name, "count": len(passages)}
        atomic_write_json(
            tmp / "manifest.json",
            {
                **settings_of(rcfg, corpus_sha256),
                "dim": int(vectors.shape[1]),
                "count": len(texts),
                "source": source,
                "collections": manifest_collections,
            },
        )
    return out


def index(cfg: DictConfig) -> Path:
    """`cogcore index`: index `<run_dir>/world/corpus.jsonl`, or the folder `docs=` names."""
    out = Path(cfg.run_dir) / "index"
    if cfg.docs:
        source = str(Path(cfg.docs).expanduser())
        collections = {"docs": folder_passages(source, cfg.chunk.words, cfg.chunk.overlap)}
        checksum = passages_sha256(collections["docs"])
    else:
        corpus = Path(cfg.run_dir) / "world" / "corpus.jsonl"
        if not corpus.exists():
            raise DataError(
                f"{corpus}: no world corpus; run `cogcore world run_dir={cfg.run_dir}` first, "
                "or index your own documents with docs=<folder>"
            )
        source, checksum = str(corpus), sha256_file(corpus)
        collections = None
    settings = settings_of(cfg.retriever, checksum)
    if decide(out / "manifest.json", settings, force=cfg.force) is Decision.UP_TO_DATE:
        print(f"index: {out} is up to date")
        return out
    collections = collections or world_collections(source)
    build_index(collections, out, cfg.retriever, source, checksum)
    count = sum(map(len, collections.values()))
    print(f"index: {count} passages in {len(collections)} collection(s) from {source} -> {out}")
    return out
