"""The one Retriever that teacher, student, assistant and evals share: `search(query, k)` returns ranked
passages `{id, title, text, score}` from dense (FAISS), lexical (BM25) or hybrid (reciprocal rank fusion)
search. An index holds one or more collections (one per synthetic world, or one for a folder of
documents); a search looks in one collection, so facts of one world never answer for another."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from cogcore.core.io import DataError, read_json, sha256_file
from cogcore.retrieval import bm25, dense
from cogcore.retrieval.embedder import embed, load_embedder
from cogcore.retrieval.store import PassagesById, PassageStore

FORMAT = 2  # 2: memory-mapped passage stores (offsets.npy) and file checksums in the manifest
MODES = ("dense", "bm25", "hybrid")


@dataclass
class Collection:
    passages: PassageStore
    dense: object | None  # faiss.Index
    bm25: object | None  # bm25s.BM25


def rebuild_hint(path: Path) -> str:
    run_dir = path.parent
    return f"rebuild it with `cogcore index run_dir={run_dir}` (plus the retriever= options you want)"


def file_checksums(root: Path) -> dict[str, dict]:
    """The size and sha256 of every file under `root` but the manifest, by relative path."""
    return {
        p.relative_to(root).as_posix(): {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "manifest.json"
    }


def verify_files(path: Path, manifest: dict, how: str = "sha256") -> None:
    """Every index file as the manifest recorded it (`how`: sha256, or size only): a damaged or changed
    file fails here, named, instead of deep inside FAISS or BM25."""
    if how not in ("sha256", "size"):
        raise DataError(f"retriever.verify={how!r}: choose sha256 or size")
    for rel, want in manifest["files"].items():
        file = path / rel
        size = file.stat().st_size if file.exists() else None
        if size != want["bytes"]:
            found = "is missing" if size is None else f"has {size} bytes, not {want['bytes']}"
        elif how == "sha256" and sha256_file(file) != want["sha256"]:
            found = "has another sha256 than the one recorded"
        else:
            continue
        raise DataError(
            f"{file}: {found} in {path}/manifest.json (damaged or changed since the build); rebuild the "
            "index with force=true: `cogcore index run_dir=<run> force=true` (with the docs= or "
            "corpus.path= and retriever= options it was built with)"
        )


def check_manifest(path: Path, manifest: dict, rcfg: DictConfig, corpus_sha256: str | None) -> None:
    """Fail with a message saying what differs and how to rebuild, instead of searching garbage."""
    if manifest.get("format") != FORMAT:
        raise DataError(
            f"{path}/manifest.json: index format {manifest.get('format')} is not {FORMAT}; "
            + rebuild_hint(path)
        )
    if manifest["embedder"] != rcfg.embedder:
        raise DataError(
            f"{path}: index was built with embedder {manifest['embedder']!r} but retriever.embedder is "
            f"{rcfg.embedder!r}; set retriever.embedder={manifest['embedder']} or " + rebuild_hint(path)
        )
    prompts = OmegaConf.to_container(rcfg.prompts, resolve=True) if "prompts" in rcfg else {}
    if manifest.get("prompts", {}) != prompts:
        raise DataError(
            f"{path}: index was built with prompts {manifest.get('prompts')} but retriever.prompts is "
            f"{prompts}; choose the retriever/embedder= preset it was built with, or " + rebuild_hint(path)
        )
    if corpus_sha256 is not None and manifest["corpus_sha256"] != corpus_sha256:
        raise DataError(
            f"{path}: index was built from another corpus ({manifest['source']}, sha256 "
            f"{manifest['corpus_sha256'][:12]}…) than the one in use (sha256 {corpus_sha256[:12]}…); "
            + rebuild_hint(path)
        )


class Retriever:
    def __init__(
        self,
        collections: dict[str, Collection],
        embedder,
        mode: str,
        rrf_k: int,
        candidates: int,
        manifest: dict | None = None,
        gpu_resources=None,  # faiss.StandardGpuResources: must live as long as the GPU indexes
    ):
        if mode not in MODES:
            raise ValueError(f"retriever.mode={mode!r}: choose one of {MODES}")
        self.collections = collections
        self.embedder = embedder
        self.mode = mode
        self.rrf_k = rrf_k
        self.candidates = candidates
        self.manifest = manifest or {}
        self.gpu_resources = gpu_resources

    @classmethod
    def load(cls, path: str | Path, rcfg: DictConfig, corpus_sha256: str | None = None) -> Retriever:
        """Load `<run_dir>/index`, checking it against the configured embedder and (if given) corpus."""
        path = Path(path)
        if not (path / "manifest.json").exists():
            raise DataError(f"{path}: no index here (manifest.json missing); " + rebuild_hint(path))
        manifest = read_json(path / "manifest.json")
        check_manifest(path, manifest, rcfg, corpus_sha256)
        verify_files(path, manifest, rcfg.get("verify", "sha256"))
        gpu = dense.use_gpu(rcfg.dense.device) if rcfg.mode != "bm25" else False
        resources = None
        if gpu:
            import faiss

            resources = faiss.StandardGpuResources()
        collections = {}
        for name, info in manifest["collections"].items():
            folder = path / "collections" / info["dir"]
            index = dense.load(str(folder / "dense.faiss"), rcfg.dense) if rcfg.mode != "bm25" else None
            if gpu:
                index = dense.to_gpu(index, resources)
            lexical = bm25.load(str(folder / "bm25")) if rcfg.mode != "dense" else None
            collections[name] = Collection(PassageStore(folder), index, lexical)
        embedder = load_embedder(rcfg) if rcfg.mode != "bm25" else None
        return cls(collections, embedder, rcfg.mode, rcfg.rrf_k, rcfg.candidates, manifest, resources)

    def _collection(self, name: str | None) -> Collection:
        if name is None:
            if len(self.collections) != 1:
                raise ValueError(f"this index holds {len(self.collections)} collections; name one to search")
            return next(iter(self.collections.values()))
        if name not in self.collections:
            raise KeyError(f"no collection {name!r} in this index (it holds {len(self.collections)})")
        return self.collections[name]

    def passages_by_id(self) -> PassagesById:
        """Every passage of every collection, by id (the gold passages of a question, looked up); the id
        table is built on the first lookup."""
        return PassagesById([c.passages for c in self.collections.values()])

    def search(self, query: str, k: int = 5, collection: str | None = None) -> list[dict]:
        return self.search_batch([query], k, [collection])[0]

    def search_batch(
        self, queries: list[str], k: int = 5, collections: list[str | None] | None = None
    ) -> list[list[dict]]:
        """Rank passages for many queries at once: one embedding call for all of them, one FAISS and one
        BM25 call per collection."""
        collections = collections or [None] * len(queries)
        vectors = embed(self.embedder, queries) if self.embedder is not None and queries else None
        groups: dict[str | None, list[int]] = {}
        for i, name in enumerate(collections):
            groups.setdefault(name, []).append(i)
        results: list[list[dict]] = [[] for _ in queries]
        for name, rows in groups.items():
            col = self._collection(name)
            ranked = self._rank(
                col, [queries[i] for i in rows], None if vectors is None else vectors[rows], k
            )
            for i, hits in zip(rows, ranked, strict=True):
                results[i] = [{**col.passages[j], "score": round(float(s), 6)} for j, s in hits]
        return results

    def _rank(
        self, col: Collection, queries: list[str], vectors: np.ndarray | None, k: int
    ) -> list[list[tuple[int, float]]]:
        n = len(col.passages)
        depth = min(n, k if self.mode != "hybrid" else max(k, self.candidates))
        dense_hits = lexical_hits = None
        if self.mode != "bm25":
            scores, ids = col.dense.search(vectors, depth)
            dense_hits = [
                [(int(j), float(s)) for j, s in zip(r_ids, r_sc, strict=True) if j >= 0]
                for r_ids, r_sc in zip(ids, scores, strict=True)
            ]
        if self.mode != "dense":
            ids, scores = bm25.search(col.bm25, queries, depth)
            # A BM25 score of 0 means no query term matched: not a hit at all.
            lexical_hits = [
                [(int(j), float(s)) for j, s in zip(r_ids, r_sc, strict=True) if s > 0]
                for r_ids, r_sc in zip(ids, scores, strict=True)
            ]
        if self.mode == "dense":
            return [hits[:k] for hits in dense_hits]
        if self.mode == "bm25":
            return [hits[:k] for hits in lexical_hits]
        return [self._fuse(d, b)[:k] for d, b in zip(dense_hits, lexical_hits, strict=True)]

    def _fuse(self, *rankings: list[tuple[int, float]]) -> list[tuple[int, float]]:
        """Reciprocal rank fusion: score(d) = sum over rankings of 1 / (rrf_k + rank of d)."""
        fused: dict[int, float] = {}
        for ranking in rankings:
            for rank, (j, _) in enumerate(ranking, 1):
                fused[j] = fused.get(j, 0.0) + 1.0 / (self.rrf_k + rank)
        return sorted(fused.items(), key=lambda item: (-item[1], item[0]))
