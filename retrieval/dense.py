"""FAISS inner-product indexes over unit vectors: flat (exact, the default), IVF or HNSW by config,
moved to the GPU when faiss-gpu and a GPU are present."""

from __future__ import annotations

import faiss
import numpy as np
from omegaconf import DictConfig


def build(vectors: np.ndarray, cfg: DictConfig) -> faiss.Index:
    n, dim = vectors.shape
    if cfg.kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif cfg.kind == "ivf":
        # IVF needs tens of training points per list; a small collection gets fewer lists.
        nlist = max(1, min(cfg.nlist, n // 39))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(vectors)
        index.nprobe = min(cfg.nprobe, nlist)
    elif cfg.kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = cfg.ef_search
    else:
        raise ValueError(f"retriever.dense.kind={cfg.kind!r}: choose flat, ivf or hnsw")
    index.add(vectors)
    return index


def use_gpu(device: str) -> bool:
    """`auto` takes the GPU when this faiss build has one; `gpu` insists on it."""
    available = hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    if device == "gpu" and not available:
        raise RuntimeError(
            "retriever.dense.device=gpu, but this faiss has no GPU: install cogcore[gpu] on a CUDA machine"
        )
    return device in ("gpu", "auto") and available


def to_gpu(index: faiss.Index, resources) -> faiss.Index:
    return faiss.index_cpu_to_gpu(resources, 0, index)


def save(index: faiss.Index, path: str) -> None:
    faiss.write_index(index, path)


def load(path: str) -> faiss.Index:
    return faiss.read_index(path)
