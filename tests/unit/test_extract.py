"""A full fine-tune cut to one LoRA adapter (trainer.train.extract) on a tiny Llama: exact at full rank, the budget
kept, what no LoRA carries reported, PEFT loads it, and distillation moves it towards the full model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from trainer.train.extract import allocate, extract_adapter, load_full
from trainer.world.distill import distill


def tiny(seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)  # fmt: skip
    return LlamaForCausalLM(config)


def tokenizer() -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, models

    vocab = {f"t{i}": i for i in range(64)}
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="t0")),
                                   pad_token="t0", eos_token="t1")  # fmt: skip


@pytest.fixture
def models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    import trainer.train.extract as extract

    monkeypatch.setattr(extract, "BASE_MODEL_ID", str(tmp_path / "start"))  # the adapters' base: the tiny start
    start = tiny(0)
    tuned = tiny(0)
    with torch.no_grad():  # a fine-tune: every weight moved, the norms and embeddings too
        for p in tuned.parameters():
            p.add_(0.05 * torch.randn_like(p))
    paths = []
    for name, model in (("start", start), ("tuned", tuned)):
        model.save_pretrained(tmp_path / name)
        tokenizer().save_pretrained(tmp_path / name)
        paths.append(str(tmp_path / name))
    return paths[0], paths[1]


def test_full_rank_is_the_change_itself(models: tuple[str, str], tmp_path: Path) -> None:
    start, tuned = models
    report, tensors, _ = extract_adapter(start, tuned, tmp_path / "adapter", rank=48)
    base, full = load_full(start).state_dict(), load_full(tuned).state_dict()
    name = "model.layers.1.mlp.down_proj"
    delta = tensors[f"base_model.model.{name}.lora_B.weight"] @ tensors[f"base_model.model.{name}.lora_A.weight"]
    torch.testing.assert_close(delta, full[f"{name}.weight"] - base[f"{name}.weight"], atol=1e-5, rtol=1e-4)
    assert report.kept_energy == pytest.approx(1.0)
    # what a LoRA cannot carry is said, not silently lost
    assert "model.embed_tokens.weight" in report.dropped and "model.layers.0.input_layernorm.weight" in report.dropped
    assert json.loads((tmp_path / "adapter" / "extract.json").read_text())["parameters"] == report.parameters


def test_a_budget_keeps_the_most_energy_per_byte(models: tuple[str, str], tmp_path: Path) -> None:
    start, tuned = models
    report, _, config = extract_adapter(start, tuned, tmp_path / "adapter", budget_mb=0.02)
    assert report.parameters <= 0.02e6 / 2 and 0 < report.kept_energy < 1
    assert set(config.rank_pattern.values()) != {config.r} or len(config.rank_pattern) == 14
    # PEFT loads it over the start model: the merged layer is the start's plus the extract
    merged = load_full(str(tmp_path / "adapter"))
    assert not torch.equal(merged.state_dict()["model.layers.0.mlp.up_proj.weight"],
                           load_full(start).state_dict()["model.layers.0.mlp.up_proj.weight"])  # fmt: skip


def test_allocation_prefers_energy_per_parameter() -> None:
    spectra = {"wide": (torch.tensor([4.0, 3.0, 1.0]), 10), "narrow": (torch.tensor([2.0, 1.9, 1.8]), 1)}
    # narrow: 4/1, 3.61/1, 3.24/1 per parameter; wide: 9/10 = 0.9 for its second direction
    assert allocate(spectra, budget=13) == {"wide": 1, "narrow": 3}
    assert allocate(spectra, budget=11) == {"wide": 1, "narrow": 1}


def test_distillation_moves_the_adapter_towards_the_full_model(models: tuple[str, str], tmp_path: Path) -> None:
    from trainer.world.teach import Piece

    start, tuned = models
    out = tmp_path / "adapter"
    report, _, _ = extract_adapter(start, tuned, out, budget_mb=0.01)
    pieces = [Piece([2 + i, 3 + i, 4 + i], [5 + i, 6 + i]) for i in range(8)]
    before = kl(out, tuned, pieces)
    report = distill(out, start, tuned, pieces, (), report, epochs=30, learning_rate=1e-2, batch_size=4)
    assert kl(out, tuned, pieces) < 0.75 * before
    assert report.distill["steps"] == 60 and json.loads((out / "adapter_config.json").read_text())["r"] >= 1


def kl(adapter: Path, tuned: str, pieces: list) -> float:
    import torch.nn.functional as F

    student, teacher = load_full(str(adapter)), load_full(tuned)
    total = 0.0
    for p in pieces:
        ids = torch.tensor([p.prompt + p.completion])
        with torch.no_grad():
            got = F.log_softmax(student(ids).logits[0, len(p.prompt) - 1 : -1], -1)
            want = F.log_softmax(teacher(ids).logits[0, len(p.prompt) - 1 : -1], -1)
        total += float(F.kl_div(got, want, log_target=True, reduction="batchmean"))
    return total


def test_full_fine_tuning_from_an_adapter_trains_every_weight(models: tuple[str, str], tmp_path: Path) -> None:
    """`trainer decide --full` from an adapter merges it first; PEFT loads adapters frozen, the merge must not be."""
    from trainer.train.decide import DecideConfig
    from trainer.train.decide_run import load_policy

    start, tuned = models
    extract_adapter(start, tuned, tmp_path / "adapter", rank=8)
    full = load_policy(str(tmp_path / "adapter"), DecideConfig(full=True), None)
    assert all(p.requires_grad for p in full.parameters()) and not hasattr(full, "peft_config")
    lora = load_policy(str(tmp_path / "adapter"), DecideConfig(full=False), None)
    trained = [n for n, p in lora.named_parameters() if p.requires_grad]
    assert trained and all("lora_" in n for n in trained)  # the adapter alone trains
