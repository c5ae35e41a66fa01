"""Documents in, passages out: a world's corpus grouped per world, or a folder of notes chunked.

A passage is `{id, title, text}`; everything downstream (indexes, the search tool, traces) speaks it.
"""

from __future__ import annotations

import re
import sys
from collections import defaultdict
from pathlib import Path
from typing import NamedTuple

from cogcore.core.io import DataError, iter_jsonl

DOC_SUFFIXES = (".txt", ".md", ".jsonl")


def world_collections(corpus_path: str | Path) -> dict[str, list[dict]]:
    """A world corpus split into one collection per world: a search never crosses worlds."""
    collections: dict[str, list[dict]] = defaultdict(list)
    for lineno, record in iter_jsonl(corpus_path):
        missing = [key for key in ("id", "world", "title", "text") if key not in record]
        if missing:
            raise DataError(
                f"{corpus_path}:{lineno}: passage lacks {missing}; regenerate with `cogcore world`"
            )
        collections[record["world"]].append({k: record[k] for k in ("id", "title", "text")})
    return dict(collections)


def chunk_words(text: str, words: int, overlap: int) -> list[str]:
    """Split on paragraphs, then pack paragraphs into chunks of at most `words` words; a paragraph longer
    than that is cut into windows that overlap by `overlap` words so no sentence loses its context."""
    if overlap >= words:
        raise ValueError(f"chunk overlap ({overlap}) must be smaller than chunk size ({words})")
    pieces: list[list[str]] = []
    for paragraph in re.split(r"\n\s*\n", text):
        tokens = paragraph.split()
        if len(tokens) <= words:
            pieces.append(tokens)
        else:
            step = words - overlap
            pieces += [tokens[i : i + words] for i in range(0, max(1, len(tokens) - overlap), step)]
    chunks, current = [], []
    for piece in (p for p in pieces if p):
        if current and len(current) + len(piece) > words:
            chunks.append(" ".join(current))
            current = []
        current = current + piece
    if current:
        chunks.append(" ".join(current))
    return chunks


def _title(path: Path, text: str) -> str:
    heading = re.search(r"^#\s+(.+)$", text, flags=re.MULTILINE) if path.suffix == ".md" else None
    return heading.group(1).strip() if heading else path.stem


class Folder(NamedTuple):
    passages: list[dict]
    skipped: list[str]  # files that are not text (relative paths), left out with a warning


def is_text(data: bytes) -> bool:
    """UTF-8 with no NUL byte: an ELF binary or random bytes named .txt are not."""
    if b"\x00" in data:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def folder_passages(folder: str | Path, words: int = 120, overlap: int = 30) -> Folder:
    """Every .txt/.md/.jsonl file under `folder`, chunked. Ids are `<relative path>#<chunk>`, or for a
    .jsonl record its own `id` (each record needs `text`; `id` and `title` are optional). A file that is
    not text is skipped, named in a warning on stderr and in `skipped`."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DataError(f"docs={folder}: not a folder; point docs= at a folder of .txt, .md or .jsonl files")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in DOC_SUFFIXES)
    if not files:
        raise DataError(f"docs={folder}: holds no {', '.join(DOC_SUFFIXES)} files; nothing to index")
    passages: list[dict] = []
    skipped: list[str] = []
    for path in files:
        rel = path.relative_to(folder).as_posix()
        data = path.read_bytes()
        if not is_text(data):
            print(f"index: skipped {path}: not a text file (binary or not UTF-8)", file=sys.stderr)
            skipped.append(rel)
            continue
        if path.suffix == ".jsonl":
            for lineno, record in iter_jsonl(path):
                if not isinstance(record.get("text"), str):
                    raise DataError(f"{path}:{lineno}: needs a string field 'text' (optional: 'id', 'title')")
                base = str(record.get("id", f"{rel}:{lineno}"))
                title = str(record.get("title", path.stem))
                chunks = chunk_words(record["text"], words, overlap)
                for i, chunk in enumerate(chunks):
                    pid = base if len(chunks) == 1 else f"{base}#{i}"
                    passages.append({"id": pid, "title": title, "text": chunk})
        else:
            text = data.decode("utf-8")
            title = _title(path, text)
            for i, chunk in enumerate(chunk_words(text, words, overlap)):
                passages.append({"id": f"{rel}#{i}", "title": title, "text": chunk})
    seen: set[str] = set()
    for p in passages:
        if p["id"] in seen:
            raise DataError(
                f"docs={folder}: passage id {p['id']!r} occurs twice; give each record a unique id"
            )
        seen.add(p["id"])
    return Folder(passages, skipped)
