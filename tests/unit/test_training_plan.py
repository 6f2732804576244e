"""The dry run's arithmetic (trainer/train/plan.py): parameter counts against published ones, the memory plan term
by term on a shape small enough to count by hand, and the layout rules (GPUs, whole prompt groups)."""

from __future__ import annotations

import pytest

from trainer.train.plan import (
    GIB,
    KNOWN_SHAPES,
    Layout,
    ModelShape,
    check_gpus,
    check_groups,
    estimate,
    model_shape,
    sequence_tokens,
    what_to_change,
)

# 2 layers, h=8, i=16, 2 heads of 4, 1 KV head (kv=4), vocab 100, tied embeddings
TINY = ModelShape(layers=2, hidden=8, intermediate=16, vocab=100, heads=2, kv_heads=1)


def test_parameter_counts_match_the_published_ones() -> None:
    # per block: q 64 + k 32 + v 32 + o 64 + gate 128 + up 128 + down 128 + norms 16 = 592; 2 blocks + 800 + 8
    assert TINY.params() == 2 * 592 + 800 + 8
    smollm2 = ModelShape.from_config({"num_hidden_layers": 30, "hidden_size": 576, "intermediate_size": 1536,
                                      "vocab_size": 49152, "num_attention_heads": 9, "num_key_value_heads": 3,
                                      "tie_word_embeddings": True, "model_type": "llama"})  # fmt: skip
    assert smollm2.params() == 134_515_008  # SmolLM2-135M's safetensors
    assert KNOWN_SHAPES["Qwen/Qwen2.5-3B-Instruct"].params() == pytest.approx(3.09e9, rel=0.005)  # its model card
    assert KNOWN_SHAPES["Qwen/Qwen2.5-7B-Instruct"].params() == pytest.approx(7.61e9, rel=0.005)


def test_lora_counts() -> None:
    # r=2 on q (8 -> 8) and v (8 -> 4): 2 * (8 + 8) + 2 * (8 + 4) = 56 a layer
    assert TINY.lora_params(2, ["q_proj", "v_proj"]) == 2 * 56
    assert TINY.targeted_params(["q_proj", "v_proj"]) == 2 * (64 + 32)


def test_a_model_shape_from_a_local_checkpoint_or_its_adapter(tmp_path) -> None:
    import json

    base = tmp_path / "base"
    base.mkdir()
    config = {"num_hidden_layers": 2, "hidden_size": 8, "intermediate_size": 16, "vocab_size": 100,
              "num_attention_heads": 2, "num_key_value_heads": 1, "tie_word_embeddings": True}  # fmt: skip
    (base / "config.json").write_text(json.dumps(config))
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(base)}))
    assert model_shape(str(base)) == model_shape(str(adapter)) == TINY
    assert model_shape("nobody/unknown-model") is None


LAYOUT = Layout(world_size=4, zero_stage=2, micro_batch=3, seq_tokens=10, completion_tokens=6, lora_r=2,
                lora_targets=("q_proj", "v_proj"), engine_share=0.25, gpu_gib=1.0)  # fmt: skip


def rows_in_bytes(layout: Layout) -> dict[str, float]:
    return {name: gib * GIB for name, gib, _ in estimate(TINY, layout).rows}


def test_the_memory_plan_term_by_term() -> None:
    rows = rows_in_bytes(LAYOUT)
    assert rows["weights"] == pytest.approx(1992 * 2)  # bf16, whole under ZeRO-2
    assert rows["gradients"] == pytest.approx(112 * 4 / 4)  # fp32, sharded over 4 from ZeRO-2
    assert rows["optimizer states"] == pytest.approx(112 * 12 / 4)
    # 3 x 10 tokens x 2 layers x 2 bytes x (9h + 4kv + 4i = 72 + 16 + 64)
    assert rows["activations"] == pytest.approx(30 * 2 * 2 * 152)
    assert rows["logits"] == pytest.approx(3 * 6 * 100 * 2 * 2)  # completion tokens only, bf16, + gradient
    assert rows["runtime"] == pytest.approx(GIB + 2 * 5e8 * 2)  # CUDA context + DeepSpeed's two buckets
    assert rows["vLLM engine"] == pytest.approx(0.25 * GIB)
    assert rows["push copies"] == pytest.approx(192 * 2)  # merged q and v in bf16
    plan = estimate(TINY, LAYOUT)
    static = 1992 * 2 + 112 + 336 + GIB + 2e9 + 0.25 * GIB
    assert plan.training_gib * GIB == pytest.approx(static + 18240 + 7200)
    assert plan.push_gib * GIB == pytest.approx(static + 384)


def test_checkpointing_keeps_layer_inputs_and_zero3_shards_the_weights() -> None:
    from dataclasses import replace

    ckpt = rows_in_bytes(replace(LAYOUT, gradient_checkpointing=True))
    assert ckpt["activations"] == pytest.approx(30 * (2 * 8 * 2 + 2 * 152))  # inputs of 2 layers + 1 recomputed
    zero3 = rows_in_bytes(replace(LAYOUT, zero_stage=3))
    assert zero3["weights"] == pytest.approx(1992 * 2 / 4)
    assert zero3["push copies"] == pytest.approx(192 * 2 + 1992 * 2 * 3 / 4)  # + the other ranks' shards, gathered
    full = rows_in_bytes(replace(LAYOUT, lora_r=0, zero_stage=0, reference_model=True))
    assert full["weights"] == pytest.approx(2 * 1992 * 2)  # policy + TRL's frozen reference
    assert full["optimizer states"] == pytest.approx(1992 * 12)
    assert full["push copies"] == 0


def test_the_gpu_recipe_does_not_fit_without_checkpointing_and_says_what_to_change() -> None:
    qwen = KNOWN_SHAPES["Qwen/Qwen2.5-3B-Instruct"]
    seq = sequence_tokens(512, 3, 3, 300)
    assert seq == 150 + 512 + 3 * 3 * 75
    layout = Layout(world_size=7, zero_stage=2, micro_batch=16, seq_tokens=seq, completion_tokens=seq - 150,
                    lora_r=32, lora_targets=("q_proj", "v_proj"), gpu_gib=80)  # fmt: skip
    plan = estimate(qwen, layout)
    assert not plan.fits and plan.peak_gib > 100
    advice = what_to_change(qwen, layout)
    assert advice[0].startswith("turn on gradient_checkpointing")  # the change that helps most comes first
    assert estimate(qwen, Layout(**{**layout.__dict__, "gradient_checkpointing": True})).fits
    assert "fits a 80 GiB GPU" not in plan.table() and "does NOT fit" in plan.table()


def test_gpus_for_trainers_and_the_server() -> None:
    assert check_gpus(7, 1, 8) is None and check_gpus(8, 0, 8) is None
    error = check_gpus(8, 1, 8)
    assert error is not None and "= 9 GPUs, the node has 8" in error and "num_processes 7" in error


def test_a_step_splits_into_whole_groups_on_every_rank() -> None:
    assert check_groups(16, 7, 1, 8) is None
    assert check_groups(4, 2, 2, 8) is None  # 4 x 2 micro-batches = 8 answers per process: one whole group
    error = check_groups(6, 3, 1, 4)
    assert error is not None and "= 18 answers a step, not a multiple of num-generations 4" in error  # TRL's rule
    error = check_groups(4, 8, 1, 8)  # 32 answers pass TRL's rule, but each rank holds half a group
    assert error is not None and "splits the groups of 8 across processes" in error
