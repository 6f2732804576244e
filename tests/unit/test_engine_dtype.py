"""`SEM_DTYPE=auto` on vLLM: float32 on an x86 CPU that cannot compute in bfloat16, vLLM's own choice elsewhere."""

from __future__ import annotations

from sem.engines.vllm import cpu_flags, resolve_dtype

AVX2_ONLY = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\nbugs\t\t: spectre_v1\n"
SAPPHIRE_RAPIDS = "flags\t\t: sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
ARM = "processor\t: 0\nFeatures\t: fp asimd bf16\n"


def test_cpu_flags_reads_the_flags_line() -> None:
    assert cpu_flags(AVX2_ONLY) == {"fpu", "sse2", "avx", "avx2", "fma"}
    assert cpu_flags(ARM) == set()


def test_auto_is_float32_only_on_a_cpu_without_bf16_instructions() -> None:
    assert resolve_dtype("auto", on_cpu=True, flags=cpu_flags(AVX2_ONLY)) == "float32"
    assert resolve_dtype("auto", on_cpu=True, flags=cpu_flags(SAPPHIRE_RAPIDS)) == "auto"
    assert resolve_dtype("auto", on_cpu=True, flags={"avx512f", "avx512_bf16"}) == "auto"
    assert resolve_dtype("auto", on_cpu=True, flags=cpu_flags(ARM)) == "auto"  # not x86: vLLM decides
    assert resolve_dtype("auto", on_cpu=False, flags=cpu_flags(AVX2_ONLY)) == "auto"  # a GPU


def test_an_explicit_dtype_is_kept() -> None:
    assert resolve_dtype("bfloat16", on_cpu=True, flags=cpu_flags(AVX2_ONLY)) == "bfloat16"
    assert resolve_dtype("float16", on_cpu=False) == "float16"
