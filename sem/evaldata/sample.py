"""The benchmark sample that ships inside the package, so that a clone with nothing beside it tests and trains.

The sample keeps each benchmark's original file layout (the same relative paths as `../shared/data`), so one
loader reads a full local copy, the sample, or a user's files alike. Only sets whose licence allows shipping them
are here (no TriviaQA); sources and licences are in `NOTICE.md` beside the files.

Rebuild it from a full data folder with `python -m sem.evaldata.sample --src ../shared/data` (deterministic: the
first rows of each file, the first rows of each MMLU subject).
"""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

SAMPLE_DIR = Path(__file__).resolve().parent / "data" / "benchmarks"


@dataclass(frozen=True, slots=True)
class SampleFile:
    """One file of the sample: `rows` leading rows (MMLU: per subject file) of `path`."""

    path: str
    rows: int
    licence: str
    source: str


_SAMPLE = (
    SampleFile("musique/musique_ans_v1.0_dev.sample150.jsonl", 120, "CC BY 4.0", "MuSiQue (StonyBrookNLP)"),
    SampleFile("musique/musique_ans_v1.0_train.sample100.jsonl", 100, "CC BY 4.0", "MuSiQue (StonyBrookNLP)"),
    SampleFile("musique/musique_ans_v1.0_train.all19938.qa_only.jsonl", 1000, "CC BY 4.0", "MuSiQue (StonyBrookNLP)"),
    SampleFile("hotpotqa/hotpot_dev_distractor_v1.sample150.json", 120, "CC BY-SA 4.0", "HotpotQA"),
    SampleFile("hotpotqa/hotpot_train_v1.1.sample100.json", 100, "CC BY-SA 4.0", "HotpotQA"),
    SampleFile("2wikimultihopqa/2wiki_dev.sample124_with_context.json", 80, "Apache-2.0", "2WikiMultihopQA (Alab-NII)"),
    SampleFile("nq_open/NQ-open.dev.sample3110.jsonl", 1000, "CC BY-SA 3.0", "NQ-open (google-research-datasets)"),
    SampleFile("gsm8k/train.jsonl", 500, "MIT", "GSM8K (openai/grade-school-math)"),
    SampleFile("gsm8k/test.sample1019.jsonl", 300, "MIT", "GSM8K (openai/grade-school-math)"),
    SampleFile("mmlu/data/dev", 5, "MIT", "MMLU (hendrycks/test)"),
    SampleFile("mmlu/data/val", 10, "MIT", "MMLU (hendrycks/test)"),
    SampleFile("mmlu/data/test", 6, "MIT", "MMLU (hendrycks/test)"),
)
_EXTRA_FILES = ("mmlu/LICENSE_hendrycks_test_MIT.txt",)


def _jsonl_head(path: Path, n: int) -> Iterator[str]:
    with path.open(encoding="utf-8") as f:
        for count, line in enumerate(f):
            if count >= n:
                break
            yield line


def _copy_head(src: Path, dest: Path, n: int) -> int:
    """Copy the first n rows of a JSONL, JSON array or folder of CSVs, in its own format; returns rows written."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():  # MMLU: n rows of every subject file
        dest.mkdir(exist_ok=True)
        total = 0
        for file in sorted(src.glob("*.csv")):
            with file.open(encoding="utf-8", newline="") as f:
                rows = [row for _, row in zip(range(n), csv.reader(f), strict=False)]
            with (dest / file.name).open("w", encoding="utf-8", newline="") as f:
                csv.writer(f).writerows(rows)
            total += len(rows)
        return total
    if src.suffix == ".json":
        rows = json.loads(src.read_text(encoding="utf-8"))[:n]
        dest.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
        return len(rows)
    lines = list(_jsonl_head(src, n))
    dest.write_text("".join(lines), encoding="utf-8")
    return len(lines)


def build_sample(src: Path, dest: Path = SAMPLE_DIR) -> dict[str, int]:
    """Write the sample from a full data folder; returns rows per file. Also writes NOTICE.md."""
    counts = {}
    for item in _SAMPLE:
        counts[item.path] = _copy_head(src / item.path, dest / item.path, item.rows)
    for extra in _EXTRA_FILES:
        shutil.copyfile(src / extra, dest / extra)
    lines = [
        "# Benchmark sample: sources and licences",
        "",
        "The first rows of each file below, in its original format, so that SEM tests and trains offline.",
        "Built with `python -m sem.evaldata.sample --src <full data folder>`. The text of each row belongs to its",
        "dataset's authors, under the licence named here; keep this attribution when you show rows.",
        "",
        "| file | rows | dataset | licence |",
        "|---|---|---|---|",
        *(f"| {i.path} | {counts[i.path]} | {i.source} | {i.licence} |" for i in _SAMPLE),
        "",
        "MMLU rows are per subject file (the dev, val and test splits of the original release; its MIT licence is in",
        "`mmlu/LICENSE_hendrycks_test_MIT.txt`). MuSiQue, HotpotQA and 2WikiMultihopQA paragraphs are Wikipedia text.",
        "TriviaQA is not shipped (its licence is not stated with the copy this sample was made from).",
        "",
    ]
    (dest / "NOTICE.md").write_text("\n".join(lines), encoding="utf-8")
    return counts


def main(
    src: Annotated[Path, typer.Option(help="A full data folder in the original layout.")],
    dest: Annotated[Path, typer.Option(help="Where the sample goes.")] = SAMPLE_DIR,
) -> None:
    """Rebuild the shipped benchmark sample from a full data folder."""
    for path, n in build_sample(src, dest).items():
        typer.echo(f"{n:6d}  {path}")


if __name__ == "__main__":
    typer.run(main)
