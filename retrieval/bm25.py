"""Lexical search: BM25 through bm25s, with English stemming ("founded" meets "founding") and stop words."""

from __future__ import annotations

import logging
from array import array
from collections.abc import Iterable

import bm25s
import numpy as np
import Stemmer

# bm25s sets its own logger to DEBUG when imported, over whatever the job's logging config said: one line
# per index build, a hundred in the demo. Back to WARNING, as base.yaml asks of it.
logging.getLogger("bm25s").setLevel(logging.WARNING)

_STEMMER = Stemmer.Stemmer("english")


def tokenize(texts: list[str]) -> list[list[str]]:
    return bm25s.tokenize(texts, stopwords="en", stemmer=_STEMMER, return_ids=False, show_progress=False)


def build(texts: list[str]) -> bm25s.BM25:
    return build_streaming([texts])


def build_streaming(chunks: Iterable[list[str]]) -> bm25s.BM25:
    """Index texts that arrive in chunks: each chunk is tokenised to ids (the vocabulary growing as it
    goes), so memory holds the token ids, never the texts of the whole corpus. Each passage's ids are an
    int32 array: a Python list of ints costs about 7 times as much."""
    tokenizer = bm25s.tokenization.Tokenizer(stopwords="en", stemmer=_STEMMER)
    ids: list[array] = []
    for texts in chunks:
        tokens = tokenizer.tokenize(texts, update_vocab=True, return_as="ids", show_progress=False)
        ids += [array("i", doc) for doc in tokens]
    model = bm25s.BM25()
    model.index(bm25s.tokenization.Tokenized(ids=ids, vocab=tokenizer.get_vocab_dict()), show_progress=False)
    return model


def search(model: bm25s.BM25, queries: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
    """(doc indices, scores), each (len(queries), k); k must not exceed the collection size."""
    docs, scores = model.retrieve(tokenize(queries), k=k, show_progress=False, n_threads=0)
    return docs, scores


def save(model: bm25s.BM25, path: str) -> None:
    model.save(path)


def load(path: str) -> bm25s.BM25:
    """Memory-mapped: the score matrix stays on disk until a query touches it."""
    return bm25s.BM25.load(path, mmap=True, show_progress=False)
