"""QA benchmarks in their original formats, normalised to one `Example`: MuSiQue, HotpotQA, 2WikiMultihopQA,
MMLU, NQ-open, TriviaQA, GSM8K. Used by the trainer (training mixes, evaluation) and by `sem corpus build` (the
questions' own paragraphs as a search corpus). Standard library only.

Files are read from a local folder (`../shared/data` in tests); `load_hub` reads the Hugging Face hub where a
network exists.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

NEEDS_SEARCH, KNOWN = "needs_search", "known"


@dataclass(frozen=True, slots=True)
class Paragraph:
    title: str
    text: str
    supporting: bool = False


@dataclass(frozen=True, slots=True)
class Example:
    """One question, normalised across benchmarks."""

    id: str
    question: str
    answers: tuple[str, ...]  # gold answers with aliases; multiple choice: the letter
    kind: str  # NEEDS_SEARCH or KNOWN
    source: str
    choices: tuple[str, ...] | None = None
    paragraphs: tuple[Paragraph, ...] = ()

    def prompt_text(self) -> str:
        """The question as the model sees it (multiple choice: with its lettered options)."""
        if not self.choices:
            return self.question
        options = "\n".join(f"{letter}. {text}" for letter, text in zip("ABCD", self.choices, strict=False))
        return f"{self.question}\n{options}\nAnswer with the letter of the correct option."

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> Example:
        return cls(
            id=str(row["id"]),
            question=row["question"],
            answers=tuple(row["answers"]),
            kind=row["kind"],
            source=row["source"],
            choices=tuple(row["choices"]) if row.get("choices") else None,
            paragraphs=tuple(Paragraph(**p) for p in row.get("paragraphs") or ()),
        )


def _jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if line.strip():
                yield lineno, json.loads(line)


def _take(rows: Iterable[Example], limit: int | None) -> list[Example]:
    out = []
    for row in rows:
        if limit is not None and len(out) >= limit:
            break
        out.append(row)
    return out


def load_musique(path: Path, limit: int | None = None) -> list[Example]:
    """MuSiQue-Ans JSONL (with paragraphs), or its QA-only form `{question, answer: [...]}`."""

    def rows() -> Iterator[Example]:
        for lineno, r in _jsonl(path):
            if r.get("answerable") is False:
                continue
            answer = r["answer"]
            answers = [answer] if isinstance(answer, str) else list(answer)
            answers += [a for a in r.get("answer_aliases", []) if a not in answers]
            paragraphs = tuple(
                Paragraph(p.get("title", ""), p["paragraph_text"], bool(p.get("is_supporting")))
                for p in r.get("paragraphs", [])
            )
            yield Example(str(r.get("id") or f"musique/{lineno}"), r["question"], tuple(answers), NEEDS_SEARCH,
                          "musique", paragraphs=paragraphs)  # fmt: skip

    return _take(rows(), limit)


def _hotpot_like(path: Path, source: str, limit: int | None) -> list[Example]:
    data = json.loads(path.read_text(encoding="utf-8"))

    def rows() -> Iterator[Example]:
        for i, r in enumerate(data):
            supporting = {title for title, _ in r.get("supporting_facts", [])}
            paragraphs = tuple(
                Paragraph(title, " ".join(s.strip() for s in sentences), title in supporting)
                for title, sentences in r.get("context", [])
            )
            yield Example(str(r.get("_id") or f"{source}/{i}"), r["question"], (r["answer"],), NEEDS_SEARCH, source,
                          paragraphs=paragraphs)  # fmt: skip

    return _take(rows(), limit)


def load_hotpotqa(path: Path, limit: int | None = None) -> list[Example]:
    """HotpotQA JSON (context as [title, [sentences]], supporting facts by title)."""
    return _hotpot_like(path, "hotpotqa", limit)


def load_2wiki(path: Path, limit: int | None = None) -> list[Example]:
    """2WikiMultihopQA JSON (HotpotQA's layout)."""
    return _hotpot_like(path, "2wiki", limit)


def load_mmlu(
    folder: Path, split: str = "val", subjects: list[str] | None = None, limit: int | None = None
) -> list[Example]:
    """MMLU CSVs `<subject>_<split>.csv` (question, A, B, C, D, letter), in file-name order."""
    files = sorted((folder / split).glob(f"*_{split}.csv"))
    if not files:
        raise FileNotFoundError(f"no MMLU files under {folder / split}")

    def rows() -> Iterator[Example]:
        for file in files:
            subject = file.name.removesuffix(f"_{split}.csv")
            if subjects and subject not in subjects:
                continue
            with file.open(encoding="utf-8", newline="") as f:
                for i, row in enumerate(csv.reader(f)):
                    if len(row) < 6:
                        continue
                    yield Example(f"mmlu/{subject}/{i}", row[0], (row[5].strip().upper(),), KNOWN, "mmlu",
                                  choices=tuple(row[1:5]))  # fmt: skip

    return _take(rows(), limit)


def _open_qa(path: Path, source: str, limit: int | None) -> list[Example]:
    def rows() -> Iterator[Example]:
        for lineno, r in _jsonl(path):
            answer = r["answer"]
            answers = (answer,) if isinstance(answer, str) else tuple(answer)
            yield Example(str(r.get("id") or f"{source}/{lineno}"), r["question"], answers, NEEDS_SEARCH, source)

    return _take(rows(), limit)


def load_nq_open(path: Path, limit: int | None = None) -> list[Example]:
    return _open_qa(path, "nq_open", limit)


def load_triviaqa(path: Path, limit: int | None = None) -> list[Example]:
    return _open_qa(path, "triviaqa", limit)


def load_gsm8k(path: Path, limit: int | None = None) -> list[Example]:
    """GSM8K JSONL; the gold is the number after `####`."""

    def rows() -> Iterator[Example]:
        for lineno, r in _jsonl(path):
            gold = r["answer"].rsplit("####", 1)[-1].replace(",", "").strip()
            yield Example(f"gsm8k/{lineno}", r["question"], (gold,), KNOWN, "gsm8k")

    return _take(rows(), limit)


# (source, split) -> (loader, path relative to the data folder)
_FILES: dict[tuple[str, str], tuple[Callable[..., list[Example]], str]] = {
    ("musique", "train"): (load_musique, "musique/musique_ans_v1.0_train.sample100.jsonl"),
    ("musique", "dev"): (load_musique, "musique/musique_ans_v1.0_dev.sample150.jsonl"),
    ("musique_qa", "train"): (load_musique, "musique/musique_ans_v1.0_train.all19938.qa_only.jsonl"),
    ("hotpotqa", "train"): (load_hotpotqa, "hotpotqa/hotpot_train_v1.1.sample100.json"),
    ("hotpotqa", "dev"): (load_hotpotqa, "hotpotqa/hotpot_dev_distractor_v1.sample150.json"),
    ("2wiki", "dev"): (load_2wiki, "2wikimultihopqa/2wiki_dev.sample124_with_context.json"),
    ("nq_open", "dev"): (load_nq_open, "nq_open/NQ-open.dev.sample3110.jsonl"),
    ("triviaqa", "dev"): (load_triviaqa, "triviaqa/triviaqa_open.sample150.jsonl"),
    ("gsm8k", "train"): (load_gsm8k, "gsm8k/train.jsonl"),
    ("gsm8k", "test"): (load_gsm8k, "gsm8k/test.sample1019.jsonl"),
}
_MMLU_SPLITS = {"train": "dev", "dev": "val", "test": "test"}
SOURCES = sorted({s for s, _ in _FILES} | {"mmlu"})


def load_source(name: str, data_dir: Path, split: str = "dev", limit: int | None = None) -> list[Example]:
    """A benchmark split from the local data folder, by name (see SOURCES)."""
    if name == "mmlu":
        if split not in _MMLU_SPLITS:
            raise ValueError(f"mmlu has splits {sorted(_MMLU_SPLITS)}, not {split!r}")
        return load_mmlu(data_dir / "mmlu" / "data", _MMLU_SPLITS[split], limit=limit)
    if (name, split) not in _FILES:
        known = ", ".join(f"{s}:{sp}" for s, sp in sorted(_FILES)) + ", mmlu:train|dev|test"
        raise ValueError(f"no {name!r} {split!r} split; choose one of {known}")
    loader, relative = _FILES[(name, split)]
    path = data_dir / relative
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing (the data folder is {data_dir})")
    return loader(path, limit=limit)


def load_hub(name: str, split: str = "validation", limit: int | None = None) -> Any:
    """The same benchmarks from the Hugging Face hub (needs `datasets` and a network)."""
    try:
        from datasets import load_dataset
    except ImportError as exc:
        raise RuntimeError("load_hub needs the `datasets` package; or use a local folder with load_source") from exc
    try:
        return load_dataset(name, split=split if limit is None else f"{split}[:{limit}]")
    except Exception as exc:  # offline machines fail in many ways
        raise RuntimeError(f"could not load {name!r} from the hub ({exc}); use a local folder") from exc


def paragraph_corpus(examples: Iterable[Example]) -> list[dict[str, str]]:
    """The examples' own paragraphs as corpus rows, deduplicated by title and text."""
    seen: set[tuple[str, str]] = set()
    rows = []
    for example in examples:
        for p in example.paragraphs:
            key = (p.title, p.text)
            if key in seen or not p.text.strip():
                continue
            seen.add(key)
            digest = hashlib.sha1(f"{p.title}\n{p.text}".encode()).hexdigest()[:16]
            rows.append({"id": f"para:{digest}", "title": p.title, "text": p.text})
    return rows


def write_jsonl(examples: Iterable[Example], path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w", encoding="utf-8") as f:
        for example in examples:
            f.write(json.dumps(example.to_dict(), ensure_ascii=False) + "\n")
            n += 1
    return n


def read_jsonl(path: Path) -> list[Example]:
    return [Example.from_dict(row) for _, row in _jsonl(path)]
