"""Where an adapter's base and tokenizer are (a shipped adapter carries no tokenizer and names its base by its
public id, which resolves to the checkpoint `sem assets` prepared: nothing is downloaded here)."""

from __future__ import annotations

import json
from pathlib import Path

from sem.assets import BASE_MODEL_ID, base_model_dir
from sem.settings import Settings
from trainer.train.lora import base_path, tokenizer_source


def adapter(folder: Path, base: str, own_tokenizer: bool = False) -> Path:
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": base}))
    if own_tokenizer:
        (folder / "tokenizer_config.json").write_text("{}")
    return folder


def test_a_checkpoint_and_an_adapter_with_its_own_tokenizer_keep_theirs(tmp_path: Path) -> None:
    assert tokenizer_source(tmp_path / "checkpoint") == str(tmp_path / "checkpoint")
    own = adapter(tmp_path / "own", str(tmp_path), own_tokenizer=True)
    assert tokenizer_source(own) == str(own)


def test_an_adapter_without_a_tokenizer_takes_its_bases(tmp_path: Path) -> None:
    base = tmp_path / "base"
    base.mkdir()
    assert tokenizer_source(adapter(tmp_path / "local", str(base))) == str(base)
    shipped = adapter(tmp_path / "shipped", BASE_MODEL_ID)
    assert base_path(shipped) == tokenizer_source(shipped) == str(base_model_dir(Settings().home_dir))
