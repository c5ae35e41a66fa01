"""The passage store of a collection: `passages.jsonl` (one `{id, title, text}` per line) and `offsets.npy`
(the byte offset of every line, and the file's length), both memory-mapped when read. Passage `j` is one
slice of the file and one `json.loads`, so 21M passages cost page cache, not tens of GB of Python objects.
"""

from __future__ import annotations

import json
import mmap
import os
from array import array
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np


def write_store(folder: Path, passages: Iterable[dict]) -> int:
    """Write the store in one pass (offsets last, so a store with `offsets.npy` is complete); the count."""
    folder.mkdir(parents=True, exist_ok=True)
    offsets = array("q", [0])
    with (folder / "passages.jsonl").open("wb") as f:
        for p in passages:
            line = json.dumps({"id": p["id"], "title": p["title"], "text": p["text"]}, ensure_ascii=False)
            f.write(line.encode() + b"\n")
            offsets.append(f.tell())
        f.flush()
        os.fsync(f.fileno())
    tmp = folder / ".offsets.npy.tmp"
    with tmp.open("wb") as f:
        np.save(f, np.frombuffer(offsets, dtype=np.int64))
    os.replace(tmp, folder / "offsets.npy")
    return len(offsets) - 1


class PassageStore:
    """A read-only sequence of passages backed by the two memory-mapped files."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.offsets = np.load(self.folder / "offsets.npy", mmap_mode="r")
        size = int(self.offsets[-1])
        with (self.folder / "passages.jsonl").open("rb") as f:
            self._data = mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ) if size else b""

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, j: int) -> dict:
        start, stop = int(self.offsets[j]), int(self.offsets[j + 1])
        return json.loads(self._data[start:stop])

    def __iter__(self) -> Iterator[dict]:
        for j in range(len(self)):
            yield self[j]

    def texts(self, start: int, stop: int) -> list[str]:
        """What the embedder and BM25 read of passages [start, stop): `title: text`."""
        return [f"{p['title']}: {p['text']}" for p in (self[j] for j in range(start, stop))]


class PassagesById(Mapping):
    """Every passage of some stores by id, the id table built on first use (gold-passage lookups)."""

    def __init__(self, stores: list[PassageStore]):
        self.stores = stores
        self._rows: dict[str, tuple[int, int]] | None = None

    def _table(self) -> dict[str, tuple[int, int]]:
        if self._rows is None:
            self._rows = {p["id"]: (s, j) for s, store in enumerate(self.stores) for j, p in enumerate(store)}
        return self._rows

    def __getitem__(self, pid: str) -> dict:
        s, j = self._table()[pid]
        return self.stores[s][j]

    def __contains__(self, pid) -> bool:
        return pid in self._table()

    def __iter__(self):
        return iter(self._table())

    def __len__(self) -> int:
        return sum(map(len, self.stores))
