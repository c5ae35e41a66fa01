"""Corpora in the formats researchers already have, streamed record by record as passages `{id, title, text}`.

- FlashRAG / Search-R1 jsonl: `{"id": ..., "contents": "\\"Title\\"\\ntext"}`, the title on the first line;
- jsonl with field names set by `corpus.fields` (`id`, `title`, `text`);
- a Hugging Face `datasets` folder written by `save_to_disk`, or parquet files (one file or a folder of
  them), read with `datasets` (memory-mapped Arrow: a corpus is never held in memory as Python objects).

A record with `contents` is read the FlashRAG way; otherwise `text` (and the optional `title`, `id`) by the
configured names. A bad record raises DataError naming the file and its line (jsonl) or row (datasets).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

from omegaconf import DictConfig

from cogcore.core.io import DataError, iter_rows, sha256_file, table_format


def split_contents(contents: str) -> tuple[str, str]:
    """FlashRAG's `contents`: the title (in double quotes) on the first line, then the text."""
    title, _, text = contents.partition("\n")
    return title.strip().strip('"'), text.strip()


def iter_passages(ccfg: DictConfig) -> Iterator[dict]:
    """The corpus `corpus.path` names, as passages in file order."""
    path = Path(ccfg.path).expanduser()
    fields = ccfg.fields
    for n, (where, record) in enumerate(iter_rows(path, ccfg.format, ccfg.split, key="corpus")):
        contents = record.get(fields.contents)
        if isinstance(contents, str):
            title, text = split_contents(contents)
        elif isinstance(record.get(fields.text), str):
            title, text = str(record.get(fields.title) or ""), record[fields.text]
        else:
            raise DataError(
                f"{where}: needs a string field {fields.contents!r} (FlashRAG: a title line, then the text) "
                f"or {fields.text!r}; name your fields with corpus.fields.text=... (and .title, .id)"
            )
        pid = record.get(fields.id)
        yield {"id": str(pid) if pid is not None else str(n), "title": title, "text": text}


def corpus_sha256(ccfg: DictConfig) -> str:
    """The checksum of the corpus files (a folder: each data file, in name order)."""
    path = Path(ccfg.path).expanduser()
    table_format(path, ccfg.format, "corpus")
    if path.is_file():
        return sha256_file(path)
    digest = hashlib.sha256()
    for p in sorted(q for q in path.rglob("*") if q.is_file()):
        digest.update(f"{p.relative_to(path)}\n{sha256_file(p)}\n".encode())
    return digest.hexdigest()
