"""The grouped multi-LoRA ops (sem.engines.lora_cpu) give what vLLM's gathering torch ops give, for a batch whose
tokens use different adapters (and none: index -1), in every shape the CPU wrapper calls them with."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from vllm.lora.ops.torch_ops import lora_ops as vllm_ops

from sem.engines import lora_cpu


def originals():
    """vLLM's own ops, from a fresh copy of their module (the plugin may have replaced them in this process)."""
    spec = importlib.util.spec_from_file_location("vllm_lora_ops_original", vllm_ops.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


@pytest.mark.parametrize("four_dims", [False, True])
def test_grouped_ops_equal_vllms(four_dims: bool) -> None:
    torch.manual_seed(0)
    ops = originals()
    tokens, hidden, rank, out, slots = 7, 24, 8, 40, 3
    indices = torch.tensor([0, 2, 2, -1, 0, 1, -1])
    x = torch.randn(tokens, hidden)
    a = torch.randn(slots, rank, hidden)
    b = torch.randn(slots, out, rank)
    if four_dims:
        a, b = a.unsqueeze(1), b.unsqueeze(1)
    shrunk_ours, shrunk_theirs = torch.zeros(tokens, rank), torch.zeros(tokens, rank)
    lora_cpu.bgmv_shrink(x, a, shrunk_ours, indices, 0.5)
    ops.bgmv_shrink(x, a, shrunk_theirs, indices, 0.5)
    torch.testing.assert_close(shrunk_ours, shrunk_theirs)
    base = torch.randn(tokens, out + 4)
    for add in (True, False):
        ours, theirs = base.clone(), base.clone()
        lora_cpu.bgmv_expand(shrunk_ours, b, ours, indices, add_inputs=add)
        ops.bgmv_expand(shrunk_theirs, b, theirs, indices, add_inputs=add)
        torch.testing.assert_close(ours, theirs)
        ours, theirs = base.clone(), base.clone()
        lora_cpu.bgmv_expand_slice(shrunk_ours, b, ours, indices, 2, out, add_inputs=add)
        ops.bgmv_expand_slice(shrunk_theirs, b, theirs, indices, 2, out, add_inputs=add)
        torch.testing.assert_close(ours, theirs)


def test_registered_where_the_cpu_wrapper_calls_them() -> None:
    from vllm.lora.punica_wrapper import punica_cpu

    lora_cpu.register()
    assert punica_cpu.bgmv_shrink is lora_cpu.bgmv_shrink and vllm_ops.bgmv_expand is lora_cpu.bgmv_expand


def test_the_next_step_with_other_indices_is_not_served_the_last_groups() -> None:
    torch.manual_seed(1)
    ops = originals()
    x, a = torch.randn(4, 8), torch.randn(2, 3, 8)
    for indices in (torch.tensor([0, 0, 1, 1]), torch.tensor([1, 0, 0, 1]), torch.tensor([1, 1, 1, 1])):
        ours, theirs = torch.zeros(4, 3), torch.zeros(4, 3)
        lora_cpu.bgmv_shrink(x, a, ours, indices)
        ops.bgmv_shrink(x, a, theirs, indices)
        torch.testing.assert_close(ours, theirs)


def test_serving_adapters_asks_vllm_for_their_largest_rank_and_refuses_a_missing_one(tmp_path) -> None:
    import json

    from sem.engines.vllm import lora_arguments
    from sem.errors import ConfigError

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "adapter_config.json").write_text(json.dumps({"r": 16, "rank_pattern": {"x.down_proj": 120}}))
    args = lora_arguments({"world": str(tmp_path / "a")})
    assert args == {"enable_lora": True, "max_loras": 1, "max_cpu_loras": 1, "max_lora_rank": 128}
    with pytest.raises(ConfigError, match=r"no PEFT adapter .* at gone="):
        lora_arguments({"world": str(tmp_path / "a"), "gone": str(tmp_path / "b")})
