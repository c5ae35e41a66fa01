"""Files that never tear: atomic writes, resumable JSONL appends, and JSONL reads whose errors say where,
among them the checked reader of question files (`iter_qa`) that traces and evals share."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class DataError(ValueError):
    """Bad input in a file: the message names the file, the line and what to fix."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write to a temporary file beside `path`, fsync, then rename: readers see the old or the new file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the mode open() would
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_jsonl(path: str | Path, records: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Build a directory under a temporary name and swap it into place only if the body succeeds.

    A crash mid-build leaves a `.tmp-*` sibling, never a half-written `path` that loads.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    tmp.chmod(0o777 & ~_umask())
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if path.exists():
        old = path.parent / f".{path.name}.old-{os.getpid()}"
        os.replace(path, old)
    os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: not valid JSON ({e.msg}); fix or delete the file") from e


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """Yield (line number, record) for each non-blank line; a bad line raises DataError naming it."""
    path = Path(path)
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: not valid JSON ({e.msg}); fix or remove this line") from e
            if not isinstance(record, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
            yield lineno, record


def read_jsonl(path: str | Path) -> list[dict]:
    return [record for _, record in iter_jsonl(path)]


TABLE_FORMATS = ("auto", "jsonl", "hf", "parquet")


def table_format(path: Path, fmt: str, key: str) -> str:
    """The format of a table of records: a .jsonl file, a `datasets` save_to_disk folder, or parquet."""
    if fmt not in TABLE_FORMATS:
        raise DataError(f"{key}.format={fmt!r}: choose one of {', '.join(TABLE_FORMATS)}")
    if not path.exists():
        raise DataError(f"{key}={path}: no such file or folder")
    if fmt != "auto":
        return fmt
    if path.is_dir():
        if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
            return "hf"
        if any(path.glob("*.parquet")):
            return "parquet"
        raise DataError(
            f"{key}={path}: a folder, but neither a `datasets` save_to_disk folder nor parquet files; "
            "point it at a .jsonl file, a save_to_disk folder or parquet files"
        )
    return "parquet" if path.suffix == ".parquet" else "jsonl"


def iter_rows(
    path: str | Path, fmt: str = "auto", split: str | None = None, key: str = "path"
) -> Iterator[tuple[str, dict]]:
    """(where, record) for every record of a jsonl file, a `datasets` save_to_disk folder or parquet
    file(s), read with `datasets` (memory-mapped Arrow). `where` is `file:line`, or `path:row n`."""
    path = Path(path).expanduser()
    fmt = table_format(path, fmt, key)
    if fmt == "jsonl":
        for lineno, record in iter_jsonl(path):
            yield f"{path}:{lineno}", record
        return
    import datasets

    if fmt == "parquet":
        files = sorted(str(p) for p in path.glob("*.parquet")) if path.is_dir() else [str(path)]
        ds = datasets.load_dataset("parquet", data_files=files, split="train")
    else:
        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise DataError(
                    f"{path}: a DatasetDict with splits {list(ds)}; pick one with {key}.split={list(ds)[0]}"
                )
            ds = ds[split]
    row = 0
    for batch in ds.iter(batch_size=1024):
        columns = list(batch)
        for values in zip(*(batch[c] for c in columns), strict=True):
            yield f"{path}:row {row}", dict(zip(columns, values, strict=True))
            row += 1


def iter_qa(
    path: str | Path, question: str = "question", answers: str = "answers", split: str | None = None
) -> Iterator[dict]:
    """The records of a question file (jsonl, a `datasets` folder or parquet), checked record by record:
    a non-empty question, a non-empty list of string answers, unique ids; `id` defaults to `line-<n>`
    and `type` to `qa`. `question` and `answers` name those fields (read into `question` and `answers`);
    FlashRAG's `golden_answers` is read when `answers` is absent. Every other field is kept."""
    lines = {}
    for where, record in iter_rows(path, split=split, key="questions"):
        if not isinstance(record.get(question), str) or not record[question].strip():
            raise DataError(f"{where}: needs a non-empty string {question!r}")
        golds = record.get(answers, record.get("golden_answers") if answers == "answers" else None)
        if not isinstance(golds, list) or not golds or not all(isinstance(a, str) for a in golds):
            raise DataError(
                f"{where}: {answers!r} must be a non-empty list of strings (FlashRAG's 'golden_answers' is "
                'read too): the gold answers, e.g. ["Paris"]; ["unknown"] for a question no passage answers'
            )
        place = where.rsplit(":", 1)[1]  # a jsonl line number, or `row <n>`
        place = f"line {place}" if place.isdigit() else place
        qid = str(record.get("id", f"line-{place.split()[1]}"))
        if qid in lines:
            raise DataError(f"{where}: id {qid!r} is already used on {lines[qid]}; make ids unique")
        lines[qid] = place
        yield {
            **record,
            "id": qid,
            "type": str(record.get("type", "qa")),
            "question": record[question],
            "answers": golds,
        }


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class JsonlAppender:
    """Append records one per line, flushed as each is written, so a killed process loses at most the
    record in flight. On open, a torn last line (a crash mid-write) is cut off, and the ids already
    present are read so that a resumed job can skip them and never write an id twice."""

    def __init__(self, path: str | Path, key: str = "id"):
        self.path = Path(path)
        self.key = key
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch()
        self._truncate_torn_tail()
        self.ids = {r[key] for r in read_jsonl(self.path)}
        self._f = self.path.open("a", encoding="utf-8")

    def _truncate_torn_tail(self) -> None:
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            with self.path.open("r+b") as f:
                f.truncate(data.rfind(b"\n") + 1)

    def write(self, record: dict) -> None:
        rid = record[self.key]
        if rid in self.ids:
            raise ValueError(f"{self.path}: id {rid!r} is already written; a record is never written twice")
        self._f.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._f.flush()
        self.ids.add(rid)

    def close(self) -> None:
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
