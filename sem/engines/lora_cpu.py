"""Faster multi-LoRA on vLLM's CPU build: its torch ops gather each token's adapter weights (`weights[indices]`, a
copy of a rank x hidden matrix per token, per layer) before an einsum, so a 200-token prefill through rank 128 copies
~26 GB per forward. Here the tokens are grouped by adapter and each group is one matmul with that adapter's
weights: the same results (the same index picks the same weights, `-1` included), without the copies.

Installed as a vLLM general plugin (entry point `vllm.general_plugins`), which vLLM loads in every process that runs
the model; it changes nothing off the CPU. Measured on 2 cores (bench/adapters.py): see BENCHMARKS.md.
"""

from __future__ import annotations

from typing import Any

_groups_cache: tuple[Any, list[tuple[int, Any]]] | None = None


def _groups(indices: Any) -> list[tuple[int, Any]]:
    """(adapter index, the rows that use it), worked out once per forward step: every LoRA layer of a step is handed
    the same token indices (a fresh tensor each time on the sgmv path), so a comparison with the last ones, one pass
    over a few hundred integers, saves the sort and the searches of the other ~400 calls."""
    import torch

    global _groups_cache
    if _groups_cache is not None and _groups_cache[0].shape == indices.shape and torch.equal(_groups_cache[0], indices):
        return _groups_cache[1]
    distinct = torch.unique(indices).tolist()
    groups = [(distinct[0], None)] if len(distinct) == 1 else \
        [(index, (indices == index).nonzero().squeeze(1)) for index in distinct]  # fmt: skip
    _groups_cache = (indices.clone(), groups)
    return groups


def _grouped(inputs: Any, weights: Any, indices: Any, dtype: Any) -> Any:
    """Row b of the result is `inputs[b] @ weights[indices[b]].T`, one matmul per distinct index."""
    import torch

    if weights.dim() == 4:
        weights = weights.squeeze(1)
    x = inputs.to(dtype)
    groups = _groups(indices)
    if groups[0][1] is None:  # one adapter for every token
        return x @ weights[groups[0][0]].to(dtype).T
    out = torch.empty((x.shape[0], weights.shape[1]), dtype=dtype, device=x.device)
    for index, rows in groups:
        out[rows] = x[rows] @ weights[index].to(dtype).T
    return out


def bgmv_shrink(inputs: Any, lora_a_weights: Any, output_tensor: Any, lora_indices_tensor: Any,
                scaling: float = 1.0) -> None:  # fmt: skip
    outputs = _grouped(inputs, lora_a_weights, lora_indices_tensor, output_tensor.dtype)
    output_tensor[:, : outputs.shape[1]] = scaling * outputs


def bgmv_expand(inputs: Any, lora_b_weights: Any, output_tensor: Any, lora_indices_tensor: Any,
                add_inputs: bool = True) -> None:  # fmt: skip
    outputs = _grouped(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    limit = output_tensor.shape[0]
    if outputs.shape[0] == 1 and output_tensor.shape[0] != 1:
        limit = 1
    common = min(outputs.shape[1], output_tensor.shape[1])  # adapter and model may pad differently
    if add_inputs:
        output_tensor[:, :common] += outputs[:limit, :common]
    else:
        output_tensor[:, :common] = outputs[:limit, :common]


def bgmv_expand_slice(inputs: Any, lora_b_weights: Any, output_tensor: Any, lora_indices_tensor: Any,
                      slice_offset: int, slice_size: int, add_inputs: bool = True) -> None:  # fmt: skip
    outputs = _grouped(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    if add_inputs:
        output_tensor[:, slice_offset : slice_offset + slice_size] += outputs
    else:
        output_tensor[:, slice_offset : slice_offset + slice_size] = outputs


def register() -> None:
    """vLLM's plugin hook: on a CPU, the grouped ops replace the gathering ones where the CPU wrapper calls them."""
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return
    from vllm.lora.ops.torch_ops import lora_ops
    from vllm.lora.punica_wrapper import punica_cpu

    for module in (lora_ops, punica_cpu):  # sgmv_* call bgmv_* through lora_ops; the wrapper imported them by name
        for name, op in (("bgmv_shrink", bgmv_shrink), ("bgmv_expand", bgmv_expand),
                         ("bgmv_expand_slice", bgmv_expand_slice)):  # fmt: skip
            if hasattr(module, name):
                setattr(module, name, op)
