"""The corpus format: JSONL, one passage per line: {"id": str, "title": str, "text": str}."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from sem.errors import ConfigError
from sem.types import Passage


def _rows(path: Path, required: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, row) of a JSONL file; a line that is not an object with `required` raises ConfigError."""
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                row[required]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise ConfigError(f"{path}:{lineno}: not a passage (needs {required}): {exc}") from exc
            yield lineno, row


def iter_passages(path: Path) -> Iterator[Passage]:
    """Read a corpus JSONL lazily; a bad line raises ConfigError naming the file and line."""
    for lineno, row in _rows(path, "text"):
        if "id" not in row:
            raise ConfigError(f"{path}:{lineno}: not a passage (needs id and text)")
        yield Passage(id=str(row["id"]), title=row.get("title") or "", text=row["text"])


def load_corpus(path: Path) -> list[Passage]:
    if not path.is_file():
        raise ConfigError(f"corpus file not found: {path}")
    return list(iter_passages(path))


def write_corpus(passages: Iterable[Passage | dict], path: Path) -> int:
    """Write passages as JSONL (atomically: a temp file renamed). Returns the count."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    n = 0
    with tmp.open("w", encoding="utf-8") as f:
        for p in passages:
            row = p.model_dump(exclude={"score"}) if isinstance(p, Passage) else p
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    tmp.replace(path)
    return n


def file_sha256(path: Path) -> str:
    """A file's sha256 (hex), read 1 MiB at a time: a corpus's (`corpus_hash`), a pinned wheel's, an adapter's."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def corpus_hash(path: Path) -> str:
    """Content hash of a corpus file: versions its index and its cache keys."""
    return file_sha256(path)


def chunk_text(text: str, *, words: int = 200, overlap: int = 40) -> list[str]:
    """Split a long text into chunks of `words` words that overlap by `overlap` words.

    >>> [len(c.split()) for c in chunk_text(" ".join(["w"] * 450), words=200, overlap=50)]
    [200, 200, 150]
    """
    if overlap >= words:
        raise ValueError("overlap must be smaller than the chunk size")
    tokens = text.split()
    if len(tokens) <= words:
        return [" ".join(tokens)] if tokens else []
    step = words - overlap
    return [" ".join(tokens[i : i + words]) for i in range(0, len(tokens) - overlap, step)]


def passages_from_folder(folder: Path, *, words: int = 200, overlap: int = 40) -> Iterator[dict[str, str]]:
    """Every .txt / .md file under a folder, chunked with overlap; the title is the file name."""
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in {".txt", ".md"} and p.is_file())
    if not files:
        raise ConfigError(f"no .txt or .md files under {folder}")
    for file in files:
        relative = file.relative_to(folder).as_posix()
        for i, chunk in enumerate(chunk_text(file.read_text(encoding="utf-8", errors="replace"), words=words,
                                             overlap=overlap)):  # fmt: skip
            yield {"id": f"{relative}#{i}", "title": file.stem.replace("_", " "), "text": chunk}


def passages_from_jsonl(path: Path, *, words: int = 200, overlap: int = 40) -> Iterator[dict[str, str]]:
    """A user's JSONL (id optional, title optional, text required), long texts chunked."""
    for lineno, row in _rows(path, "text"):
        text, title = row["text"], row.get("title") or ""
        base = str(row.get("id") or f"{path.stem}:{lineno}")
        chunks = chunk_text(text, words=words, overlap=overlap)
        for i, chunk in enumerate(chunks):
            yield {"id": base if len(chunks) == 1 else f"{base}#{i}", "title": title, "text": chunk}
