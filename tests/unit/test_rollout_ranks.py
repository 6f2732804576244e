"""The rollout's rank logic: weights pushed to vLLM with a LoRA policy merged out of place (the base never edited), and
each rank's engine seeded apart."""

from __future__ import annotations

import copy

import pytest
import torch


@pytest.fixture
def lora_model():
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)  # fmt: skip
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.5)  # a trained adapter: B is no longer zero
    return model


def test_the_merge_is_out_of_place_and_the_base_stays_bit_identical(lora_model) -> None:
    from trainer.train.vllm_rollout import _save_merged, lora_merged

    before = {n: t.clone() for n, t in lora_model.state_dict().items()}
    for _ in range(100):  # a hundred steps' pushes
        _save_merged(lora_model, None)
    after = lora_model.state_dict()
    assert all(torch.equal(before[n], after[n]) for n in before)
    merged = lora_merged(lora_model)
    reference = copy.deepcopy(lora_model).merge_and_unload().state_dict()
    assert len(merged) == 4  # q_proj and v_proj of two layers
    for name, tensor in merged.items():
        base_name = name.removeprefix("base_model.model.").replace(".base_layer.", ".")
        assert tensor.dtype == torch.bfloat16
        assert torch.allclose(tensor.float(), reference[base_name].float(), atol=2e-2)
        assert not torch.equal(tensor, before[name])  # the adapter is in it


def test_the_pushed_file_holds_the_merged_weights_under_the_bases_names(lora_model, tmp_path) -> None:
    from safetensors.torch import load_file

    from trainer.train.vllm_rollout import _save_merged, lora_merged

    count = _save_merged(lora_model, tmp_path / "w.safetensors")
    saved = load_file(tmp_path / "w.safetensors")
    assert count == len(saved) and not any("lora_" in n or "base_layer" in n for n in saved)
    assert "lm_head.weight" not in saved  # tied: vLLM ties it itself
    for name, tensor in lora_merged(lora_model).items():
        assert torch.equal(saved[name.removeprefix("base_model.model.").replace(".base_layer.", ".")], tensor)


def test_each_rank_samples_with_its_own_seed() -> None:
    from types import SimpleNamespace

    from trainer.train.rollout import engine_seed

    ranks = [SimpleNamespace(accelerator=SimpleNamespace(process_index=i)) for i in range(4)]
    assert [engine_seed(7, r) for r in ranks] == [7, 8, 9, 10]
    assert engine_seed(7, SimpleNamespace()) == 7  # one process, no accelerator yet
