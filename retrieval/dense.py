"""FAISS inner-product indexes over unit vectors: flat (exact, the default), hnsw, ivf or ivf_pq by config.
IVF kinds are trained on a sample and searched with `nprobe` lists; the index is built on the GPU when
faiss-gpu and a GPU are present (hnsw has no GPU form) and always saved as a CPU index."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import faiss
import numpy as np
from omegaconf import DictConfig

KINDS = ("flat", "hnsw", "ivf", "ivf_pq")


def nlist_for(cfg: DictConfig, n: int) -> int:
    # IVF needs tens of training points per list; a small collection gets fewer lists.
    return max(1, min(cfg.nlist, n // 39))


def new_index(dim: int, n: int, cfg: DictConfig) -> faiss.Index:
    """An empty index of `cfg.kind` for `n` vectors of `dim` dimensions (untrained for the ivf kinds)."""
    if cfg.kind == "flat":
        return faiss.IndexFlatIP(dim)
    if cfg.kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = cfg.ef_construction
        return index
    if cfg.kind == "ivf":
        return faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist_for(cfg, n), faiss.METRIC_INNER_PRODUCT)
    if cfg.kind == "ivf_pq":
        if dim % cfg.pq_m:
            raise ValueError(f"retriever.dense.pq_m={cfg.pq_m} must divide the embedding dimension {dim}")
        # Each code book of 2**bits centroids needs at least as many training points.
        bits = max(1, min(cfg.pq_bits, int(np.log2(min(n, cfg.train_size)))))
        return faiss.IndexIVFPQ(
            faiss.IndexFlatIP(dim), dim, nlist_for(cfg, n), cfg.pq_m, bits, faiss.METRIC_INNER_PRODUCT
        )
    raise ValueError(f"retriever.dense.kind={cfg.kind!r}: choose one of {', '.join(KINDS)}")


def build_streaming(
    dim: int,
    n: int,
    chunks: Callable[[], Iterable[np.ndarray]],
    sample: Callable[[int], np.ndarray],
    cfg: DictConfig,
    gpu: bool = False,
) -> faiss.Index:
    """Train (ivf kinds: on `sample(train_size)` rows) and add the vectors chunk by chunk, so memory holds
    one chunk plus the index."""
    index = new_index(dim, n, cfg)
    resources = None
    if gpu and cfg.kind != "hnsw":
        resources = faiss.StandardGpuResources()
        index = faiss.index_cpu_to_gpu(resources, 0, index)
    if not index.is_trained:
        index.train(np.ascontiguousarray(sample(cfg.train_size), dtype=np.float32))
    for chunk in chunks():
        index.add(np.ascontiguousarray(chunk, dtype=np.float32))
    if resources is not None:
        index = faiss.index_gpu_to_cpu(index)
    set_search_params(index, cfg)
    return index


def build(vectors: np.ndarray, cfg: DictConfig) -> faiss.Index:
    """An index of vectors already in memory (a world's small collections)."""
    n, dim = vectors.shape
    return build_streaming(dim, n, lambda: [vectors], lambda size: vectors[:: max(1, n // size)], cfg)


def set_search_params(index: faiss.Index, cfg: DictConfig) -> None:
    """Search-time settings, applied at load so that changing them needs no rebuild."""
    if isinstance(index, faiss.IndexHNSW):
        index.hnsw.efSearch = cfg.ef_search
    with_lists = faiss.try_extract_index_ivf(index)
    if with_lists is not None:
        with_lists.nprobe = min(cfg.nprobe, with_lists.nlist)


def use_gpu(device: str) -> bool:
    """`auto` takes the GPU when this faiss build has one; `gpu` insists on it."""
    available = hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    if device == "gpu" and not available:
        raise RuntimeError(
            "retriever.dense.device=gpu, but this faiss has no GPU: install cogcore[gpu] on a CUDA machine"
        )
    return device in ("gpu", "auto") and available


def to_gpu(index: faiss.Index, resources) -> faiss.Index:
    """The index on GPU 0; an hnsw index, which FAISS cannot move there, stays on the CPU."""
    if isinstance(index, faiss.IndexHNSW):
        return index
    return faiss.index_cpu_to_gpu(resources, 0, index)


def save(index: faiss.Index, path: str) -> None:
    faiss.write_index(index, path)


def load(path: str, cfg: DictConfig) -> faiss.Index:
    index = faiss.read_index(path)
    set_search_params(index, cfg)
    return index
