"""The corpus format: JSONL, one passage per line: {"id": str, "title": str, "text": str}."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from sem.errors import ConfigError
from sem.search.base import Passage


def iter_passages(path: Path) -> Iterator[Passage]:
    """Read a corpus JSONL lazily; a bad line raises ConfigError naming the file and line."""
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                yield Passage(id=str(row["id"]), title=row.get("title") or "", text=row["text"])
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise ConfigError(f"{path}:{lineno}: not a passage (needs id and text): {exc}") from exc


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


def corpus_hash(path: Path) -> str:
    """Content hash of a corpus file: versions its index and its cache keys."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
