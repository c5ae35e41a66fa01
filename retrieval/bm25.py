"""Lexical search: BM25 through bm25s, with English stemming ("founded" meets "founding") and stop words."""

from __future__ import annotations

import bm25s
import numpy as np
import Stemmer

_STEMMER = Stemmer.Stemmer("english")


def tokenize(texts: list[str]) -> list[list[str]]:
    return bm25s.tokenize(texts, stopwords="en", stemmer=_STEMMER, return_ids=False, show_progress=False)


def build(texts: list[str]) -> bm25s.BM25:
    model = bm25s.BM25()
    model.index(tokenize(texts), show_progress=False)
    return model


def search(model: bm25s.BM25, queries: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
    """(doc indices, scores), each (len(queries), k); k must not exceed the collection size."""
    docs, scores = model.retrieve(tokenize(queries), k=k, show_progress=False, n_threads=0)
    return docs, scores


def save(model: bm25s.BM25, path: str) -> None:
    model.save(path)


def load(path: str) -> bm25s.BM25:
    return bm25s.BM25.load(path)
