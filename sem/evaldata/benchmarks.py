"""QA benchmarks in their original formats, normalised to one `Example`: MuSiQue, HotpotQA, 2WikiMultihopQA,
MMLU, NQ-open, TriviaQA, GSM8K. Used by the trainer (training mixes, evaluation) and by `sem corpus build` (the
questions' own paragraphs as a search corpus). Standard library only.

One normaliser per dataset reads a row in the original file layout or the Hugging Face layout; `load_source` finds
the rows in the shipped sample, a local folder (`../shared/data`) or the hub (`datasets.load_dataset`).
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sem.evaldata.sample import SAMPLE_DIR

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


def _take(rows: Iterable[Example | None], limit: int | None) -> list[Example]:
    out = []
    for row in rows:
        if limit is not None and len(out) >= limit:
            break
        if row is not None:
            out.append(row)
    return out


def _pairs(value: Any, first: str, second: str) -> list[tuple[Any, Any]]:
    """[[a, b], ...] (the original files) or {first: [a, ...], second: [b, ...]} (the Hugging Face layout)."""
    if isinstance(value, dict):
        return list(zip(value.get(first, []), value.get(second, []), strict=False))
    return [(pair[0], pair[1]) for pair in value or []]


# ---- one normaliser per dataset: a row (original file or Hugging Face layout) -> Example ----------------------


def musique_example(row: dict[str, Any], key: str) -> Example | None:
    """MuSiQue-Ans (with paragraphs) or its QA-only form `{question, answer: [...]}`; unanswerable rows: None."""
    if row.get("answerable") is False:
        return None
    answer = row["answer"]
    answers = [answer] if isinstance(answer, str) else list(answer)
    answers += [a for a in row.get("answer_aliases") or [] if a not in answers]
    paragraphs = tuple(
        Paragraph(p.get("title", ""), p["paragraph_text"], bool(p.get("is_supporting")))
        for p in row.get("paragraphs") or []
    )
    return Example(str(row.get("id") or f"musique/{key}"), row["question"], tuple(answers), NEEDS_SEARCH, "musique",
                   paragraphs=paragraphs)  # fmt: skip


def _hotpot_like_example(row: dict[str, Any], key: str, source: str) -> Example:
    supporting = {title for title, _ in _pairs(row.get("supporting_facts"), "title", "sent_id")}
    paragraphs = tuple(
        Paragraph(title, " ".join(s.strip() for s in sentences), title in supporting)
        for title, sentences in _pairs(row.get("context"), "title", "sentences")
    )
    row_id = row.get("_id") or row.get("id") or f"{source}/{key}"
    return Example(str(row_id), row["question"], (row["answer"],), NEEDS_SEARCH, source, paragraphs=paragraphs)


def hotpotqa_example(row: dict[str, Any], key: str) -> Example:
    """HotpotQA (context as [title, [sentences]] or the hub's {title: [...], sentences: [...]})."""
    return _hotpot_like_example(row, key, "hotpotqa")


def twowiki_example(row: dict[str, Any], key: str) -> Example:
    """2WikiMultihopQA (HotpotQA's layout)."""
    return _hotpot_like_example(row, key, "2wiki")


def mmlu_example(row: dict[str, Any], key: str) -> Example:
    """MMLU: `{question, choices: [4], answer: letter or index 0-3}` (CSV rows are read into this shape)."""
    answer = row["answer"]
    letter = "ABCD"[answer] if isinstance(answer, int) else str(answer).strip().upper()
    return Example(f"mmlu/{key}", row["question"], (letter,), KNOWN, "mmlu", choices=tuple(row["choices"]))


def _open_qa_example(row: dict[str, Any], key: str, source: str) -> Example:
    answer = row["answer"]
    if isinstance(answer, dict):  # TriviaQA on the hub: {value, aliases, ...}
        answers = tuple(dict.fromkeys([answer["value"], *answer.get("aliases", [])]))
    else:
        answers = (answer,) if isinstance(answer, str) else tuple(answer)
    row_id = row.get("id") or row.get("question_id") or f"{source}/{key}"
    return Example(str(row_id), row["question"], answers, NEEDS_SEARCH, source)


def nq_open_example(row: dict[str, Any], key: str) -> Example:
    return _open_qa_example(row, key, "nq_open")


def triviaqa_example(row: dict[str, Any], key: str) -> Example:
    return _open_qa_example(row, key, "triviaqa")


def gsm8k_example(row: dict[str, Any], key: str) -> Example:
    """GSM8K; the gold is the number after `####`."""
    gold = row["answer"].rsplit("####", 1)[-1].replace(",", "").strip()
    return Example(f"gsm8k/{key}", row["question"], (gold,), KNOWN, "gsm8k")


# ---- local files in the original layouts -----------------------------------------------------------------------


def _from_file(path: Path, make: Callable[[dict[str, Any], str], Example | None], split: str | None,
               limit: int | None) -> list[Example]:  # fmt: skip
    """Rows of a JSON array (`.json`) or JSONL file; a row without an id is keyed `<split>/<row number>`."""
    prefix = f"{split}/" if split else ""
    numbered = enumerate(json.loads(path.read_text(encoding="utf-8"))) if path.suffix == ".json" else _jsonl(path)
    return _take((make(row, f"{prefix}{n}") for n, row in numbered), limit)


def load_musique(path: Path, limit: int | None = None, split: str | None = None) -> list[Example]:
    """MuSiQue-Ans JSONL (with paragraphs), or its QA-only form `{question, answer: [...]}`."""
    return _from_file(path, musique_example, split, limit)


def load_hotpotqa(path: Path, limit: int | None = None, split: str | None = None) -> list[Example]:
    """HotpotQA JSON (context as [title, [sentences]], supporting facts by title)."""
    return _from_file(path, hotpotqa_example, split, limit)


def load_2wiki(path: Path, limit: int | None = None, split: str | None = None) -> list[Example]:
    """2WikiMultihopQA JSON (HotpotQA's layout)."""
    return _from_file(path, twowiki_example, split, limit)


def load_nq_open(path: Path, limit: int | None = None, split: str | None = None) -> list[Example]:
    return _from_file(path, nq_open_example, split, limit)


def load_triviaqa(path: Path, limit: int | None = None, split: str | None = None) -> list[Example]:
    return _from_file(path, triviaqa_example, split, limit)


def load_gsm8k(path: Path, limit: int | None = None, split: str | None = None) -> list[Example]:
    """GSM8K JSONL; the gold is the number after `####`."""
    return _from_file(path, gsm8k_example, split, limit)


def load_mmlu(
    folder: Path, split: str = "val", subjects: list[str] | None = None, limit: int | None = None
) -> list[Example]:
    """MMLU CSVs `<subject>_<split>.csv` (question, A, B, C, D, letter), in file-name order.

    Ids carry the split folder: `mmlu/<split>/<subject>/<row>` (the same subject row exists in each split)."""
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
                    if len(row) >= 6:
                        fields = {"question": row[0], "choices": row[1:5], "answer": row[5]}
                        yield mmlu_example(fields, f"{split}/{subject}/{i}")

    return _take(rows(), limit)


# ---- the registry: (dataset, split) -> local file, and each dataset's Hugging Face home ---------------------------

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


@dataclass(frozen=True, slots=True)
class HubDataset:
    """Where a dataset lives on the Hugging Face hub, and which hub split each of our splits reads."""

    path: str
    config: str | None
    splits: dict[str, str]
    make: Callable[[dict[str, Any], str], Example | None]


# fmt: off
HUB: dict[str, HubDataset] = {
    "musique": HubDataset("dgslibisey/MuSiQue", None, {"train": "train", "dev": "validation"}, musique_example),
    "musique_qa": HubDataset("dgslibisey/MuSiQue", None, {"train": "train"}, musique_example),
    "hotpotqa": HubDataset("hotpotqa/hotpot_qa", "distractor", {"train": "train", "dev": "validation"},
                           hotpotqa_example),
    "2wiki": HubDataset("framolfese/2WikiMultihopQA", None, {"train": "train", "dev": "validation"}, twowiki_example),
    "nq_open": HubDataset("google-research-datasets/nq_open", "nq_open", {"train": "train", "dev": "validation"},
                          nq_open_example),
    "triviaqa": HubDataset("mandarjoshi/trivia_qa", "rc.nocontext", {"train": "train", "dev": "validation"},
                           triviaqa_example),
    "gsm8k": HubDataset("openai/gsm8k", "main", {"train": "train", "test": "test"}, gsm8k_example),
    "mmlu": HubDataset("cais/mmlu", "all", {"train": "dev", "dev": "validation", "test": "test"}, mmlu_example),
}
# fmt: on

SAMPLE = "sample"  # the benchmark sample shipped in the package (sem/evaldata/data/benchmarks, see sem.evaldata.sample)
HUB_PREFIX = "hf"  # `hf` (each dataset's usual hub home), `hf:<dataset id or folder>[:<config>]`


def default_source() -> str:
    """`../shared/data` beside a checkout when it is there (the full files), else the shipped sample."""
    beside = Path(__file__).resolve().parents[2] / "shared" / "data"
    return str(beside) if beside.is_dir() else SAMPLE


def _check_split(name: str, split: str, splits: Iterable[str]) -> None:
    if name not in SOURCES:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(SOURCES)}")
    if split not in splits:
        known = ", ".join(f"{s}:{sp}" for s, sp in sorted(_FILES)) + ", mmlu:train|dev|test"
        raise ValueError(f"no {name!r} {split!r} split; choose one of {known}")


def load_source(name: str, where: str | Path = SAMPLE, split: str = "dev", limit: int | None = None) -> list[Example]:
    """One benchmark split, by dataset name (see SOURCES), from wherever it lives.

    Args:
        name: musique, musique_qa, hotpotqa, 2wiki, nq_open, triviaqa, gsm8k or mmlu.
        where: `sample` (shipped with the package, offline), a folder in the original layout (`../shared/data`),
            `hf` (the dataset's Hugging Face home) or `hf:<dataset id or local dataset folder>[:<config>]`.
        split: train, dev or test (what exists for that dataset).
        limit: the first N rows only.

    >>> [e.source for e in load_source("mmlu", "sample", "dev", limit=2)]
    ['mmlu', 'mmlu']
    """
    where = str(where)
    if where == HUB_PREFIX or where.startswith(f"{HUB_PREFIX}:"):
        return load_hub(name, split, limit, where.removeprefix(HUB_PREFIX).removeprefix(":") or None)
    folder = SAMPLE_DIR if where == SAMPLE else Path(where)
    if name == "mmlu":
        if split not in _MMLU_SPLITS:
            raise ValueError(f"mmlu has splits {sorted(_MMLU_SPLITS)}, not {split!r}")
        return load_mmlu(folder / "mmlu" / "data", _MMLU_SPLITS[split], limit=limit)
    _check_split(name, split, [sp for s, sp in _FILES if s == name])
    loader, relative = _FILES[(name, split)]
    path = folder / relative
    if not path.is_file():
        unshipped = where == SAMPLE and name == "triviaqa"
        shipped = " (TriviaQA is not in the shipped sample: its licence is not stated)" if unshipped else ""
        raise FileNotFoundError(f"{path} is missing (the data folder is {folder}){shipped}")
    return loader(path, limit=limit, split=split)


def load_hub(name: str, split: str = "dev", limit: int | None = None, dataset: str | None = None) -> list[Example]:
    """A benchmark split through `datasets.load_dataset`, normalised by the same per-dataset code as local files.

    `dataset` overrides the hub id (`id` or `id:config`; a local folder in the hub's layout works too, offline)."""
    if name not in HUB:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(sorted(HUB))}")
    home = HUB[name]
    if split not in home.splits:
        raise ValueError(f"{name} has splits {sorted(home.splits)} on the hub, not {split!r}")
    path, config = home.path, home.config
    if dataset and Path(dataset).exists():  # a local folder in the hub's layout (its path may hold a colon)
        path, config = dataset, None
    elif dataset:  # `id` or `id:config`
        path, _, given = dataset.partition(":")
        config = given or None
    try:
        from datasets import load_dataset
    except ImportError as exc:
        raise RuntimeError("loading from the hub needs the `datasets` package (the `train` extra)") from exc
    hub_split = home.splits[split]
    try:
        rows = load_dataset(path, config, split=hub_split if limit is None else f"{hub_split}[:{limit}]")
    except Exception as exc:  # offline machines fail in many ways
        raise RuntimeError(f"could not load {path!r} ({config}) from the hub: {exc}; use `sample` or a folder") from exc
    return _take((home.make(dict(row), f"{split}/{i}") for i, row in enumerate(rows)), limit)


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
