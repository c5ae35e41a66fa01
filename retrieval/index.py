"""`cogcore index`: embed and index a world's corpus (one collection per world), a folder of documents
(`docs=`), or a corpus in FlashRAG jsonl / jsonl / `datasets` / parquet form (`corpus.path=`).

Layout of `<run_dir>/index/`:
    manifest.json                 embedder, prompts, dim, count, corpus checksum, collections, and the
                                  size and sha256 of every other file (written last)
    collections/<dir>/passages.jsonl, offsets.npy, dense.faiss, bm25/
A world is small and built in memory under a temporary name. A folder or a corpus is streamed: passages
go to the on-disk store, are embedded shard by shard into `<run_dir>/.index.build/shards/` (a killed
build resumes from its last shard), the FAISS index is trained on a sample and filled shard by shard, and
the finished folder is renamed into place. Either way a crash never leaves an index that loads.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from cogcore.core.io import DataError, atomic_dir, atomic_write_json, read_json, sha256_file
from cogcore.core.stage import Decision, decide
from cogcore.retrieval import bm25, dense
from cogcore.retrieval.corpus import corpus_sha256, iter_passages
from cogcore.retrieval.documents import folder_passages, world_collections
from cogcore.retrieval.embedder import embed, load_embedder
from cogcore.retrieval.retriever import FORMAT, file_checksums, verify_files
from cogcore.retrieval.store import PassageStore, write_store


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
        "prompts": OmegaConf.to_container(rcfg.prompts, resolve=True),
        "corpus_sha256": corpus_sha256,
        "dense": OmegaConf.to_container(rcfg.dense, resolve=True),
    }


def _texts(passages: Iterable[dict]) -> list[str]:
    return [f"{p['title']}: {p['text']}" for p in passages]


def build_index(
    collections: dict[str, list[dict]], out: str | Path, rcfg: DictConfig, source: str, corpus_sha256: str
) -> Path:
    """A world's collections, in memory: embed every passage in one pass, then index each collection."""
    out = Path(out)
    names = list(collections)
    texts = _texts(p for n in names for p in collections[n])
    if not texts:
        raise DataError(f"{source}: no passages to index")
    vectors = embed(load_embedder(rcfg), texts, batch_size=rcfg.batch_size, progress=True, role="passage")
    with atomic_dir(out) as tmp:
        manifest_collections, start = {}, 0
        for i, name in enumerate(tqdm(names, desc="index", unit="collection", disable=len(names) < 10)):
            passages = collections[name]
            folder = tmp / "collections" / _dir_name(name, i)
            write_store(folder, passages)
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
                "embedder_path": rcfg.get("embedder_path"),
                "dim": int(vectors.shape[1]),
                "count": len(texts),
                "source": source,
                "collections": manifest_collections,
                "files": file_checksums(tmp),
            },
        )
    return out


def _shard_paths(folder: Path, n: int, size: int) -> list[Path]:
    return [folder / f"{i:05d}.npy" for i in range((n + size - 1) // size)]


def embed_shards(store: PassageStore, folder: Path, rcfg: DictConfig) -> list[Path]:
    """Embed the store into shards of `rcfg.shard_size` rows, each written atomically: shards already on
    disk (a killed build) are kept, so the build resumes with the first missing one."""
    folder.mkdir(parents=True, exist_ok=True)
    n, size = len(store), rcfg.shard_size
    paths = _shard_paths(folder, n, size)
    todo = [i for i, p in enumerate(paths) if not p.exists()]
    if not todo:
        return paths
    done = n - sum(min(size, n - i * size) for i in todo)
    model = load_embedder(rcfg)
    pool = model.start_multi_process_pool(list(rcfg.encode_devices)) if rcfg.encode_devices else None
    step = rcfg.batch_size * 8  # progress updates every few batches
    bar = tqdm(total=n, initial=done, desc="embed", unit="passage", unit_scale=True, smoothing=0.05)
    try:
        for i in todo:
            start, stop = i * size, min(n, (i + 1) * size)
            parts = []
            for a in range(start, stop, step if pool is None else size):
                b = min(stop, a + (step if pool is None else size))
                parts.append(embed(model, store.texts(a, b), rcfg.batch_size, role="passage", pool=pool))
                bar.update(b - a)
            tmp = folder / f".{paths[i].name}.tmp"
            with tmp.open("wb") as f:
                np.save(f, np.concatenate(parts))
            os.replace(tmp, paths[i])
    finally:
        bar.close()
        if pool is not None:
            model.stop_multi_process_pool(pool)
    return paths


def _sample(paths: list[Path], n: int, size: int) -> np.ndarray:
    """About `size` rows spread evenly over the shards (the IVF training sample)."""
    step = max(1, n // size)
    return np.concatenate([np.load(p, mmap_mode="r")[::step] for p in paths])[:size]


def build_streaming(
    passages: Callable[[], Iterable[dict]],
    out: Path,
    rcfg: DictConfig,
    source: str,
    corpus_sha256: str,
    name: str = "corpus",
    extra: dict | None = None,
) -> Path:
    """One collection streamed from `passages()`: store, embedding shards, FAISS, BM25, manifest, in the
    work folder `.<out>.build` beside `out`, which a rerun of the same settings resumes."""
    settings = settings_of(rcfg, corpus_sha256)
    work = out.parent / f".{out.name}.build"
    if work.exists() and (
        not (work / "settings.json").exists() or read_json(work / "settings.json") != settings
    ):
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    atomic_write_json(work / "settings.json", settings)
    folder = work / "collections" / _dir_name(name, 0)
    if not (work / "manifest.json").exists():
        if not (folder / "offsets.npy").exists():
            write_store(folder, tqdm(passages(), desc="store", unit="passage", unit_scale=True))
        store = PassageStore(folder)
        n = len(store)
        if n == 0:
            raise DataError(f"{source}: no passages to index")
        shards = embed_shards(store, work / "shards", rcfg)
        dim = int(np.load(shards[0], mmap_mode="r").shape[1])
        print(f"index: {rcfg.dense.kind} index of {n} vectors", file=sys.stderr)
        index = dense.build_streaming(
            dim,
            n,
            lambda: (np.load(p, mmap_mode="r") for p in shards),
            lambda size: _sample(shards, n, size),
            rcfg.dense,
            gpu=dense.use_gpu(rcfg.dense.device),
        )
        dense.save(index, str(folder / "dense.faiss"))
        del index
        step = rcfg.shard_size
        bm25.save(
            bm25.build_streaming(store.texts(a, min(n, a + step)) for a in range(0, n, step)),
            str(folder / "bm25"),
        )
        shutil.rmtree(work / "shards")  # the vectors now live in dense.faiss
        (work / "settings.json").unlink()
        manifest = {
            **settings,
            **(extra or {}),
            "embedder_path": rcfg.get("embedder_path"),
            "dim": dim,
            "count": n,
            "source": source,
            "collections": {name: {"dir": folder.name, "count": n}},
            "files": file_checksums(work),
        }
        atomic_write_json(work / "manifest.json", manifest)
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        os.replace(out, old)
    os.replace(work, out)
    shutil.rmtree(old, ignore_errors=True)
    return out


def index(cfg: DictConfig) -> Path:
    """`cogcore index`: index `<run_dir>/world/corpus.jsonl`, the folder `docs=` names, or the corpus
    `corpus.path=` names."""
    out = Path(cfg.run_dir) / "index"
    if cfg.corpus.path and cfg.docs:
        raise DataError("docs= and corpus.path= are both set; index one of them")
    if cfg.corpus.path:
        source, checksum = str(Path(cfg.corpus.path).expanduser()), corpus_sha256(cfg.corpus)
    elif cfg.docs:
        source = str(Path(cfg.docs).expanduser())
        folder = folder_passages(source, cfg.chunk.words, cfg.chunk.overlap)
        checksum = passages_sha256(folder.passages)
    else:
        corpus = Path(cfg.run_dir) / "world" / "corpus.jsonl"
        if not corpus.exists():
            raise DataError(
                f"{corpus}: no world corpus; run `cogcore world run_dir={cfg.run_dir}` first, index your "
                "own documents with docs=<folder>, or a corpus with corpus.path=<file or folder>"
            )
        source, checksum = str(corpus), sha256_file(corpus)
    settings = settings_of(cfg.retriever, checksum)
    if decide(out / "manifest.json", settings, force=cfg.force) is Decision.UP_TO_DATE:
        verify_files(out, read_json(out / "manifest.json"), cfg.retriever.verify)
        print(f"index: {out} is up to date")
        return out
    if cfg.corpus.path:
        build_streaming(lambda: iter_passages(cfg.corpus), out, cfg.retriever, source, checksum)
    elif cfg.docs:
        extra = {"skipped_files": folder.skipped}
        build_streaming(lambda: folder.passages, out, cfg.retriever, source, checksum, "docs", extra)
    else:
        collections = world_collections(source)
        build_index(collections, out, cfg.retriever, source, checksum)
    manifest = read_json(out / "manifest.json")
    count, collections = manifest["count"], len(manifest["collections"])
    print(f"index: {count} passages in {collections} collection(s) from {source} -> {out}")
    return out
