"""GRPO rollouts through vLLM: one engine for the whole run, the policy's weights pushed after every optimizer step.

Two places for the engine, one loop over them:
- colocated: SEM's own `VLLMEngine` (the one the service answers with) in the trainer's process, on each rank;
- server: a `vllm serve` on GPUs of its own, reached through SEM's `OpenAIEngine` (deploy/README.md).
Either runs on an event loop in a thread of its own (AsyncLLM binds to the loop it started on, while TRL calls the
rollout synchronously once a step). Weights travel as one safetensors file in shared memory (the temp dir when
/dev/shm is too small), loaded inside vLLM's worker by a worker extension (`sem.engines.vllm.WeightLoader`):
colocated through `collective_rpc` (each rank into its own engine), on a server through its dev-mode
`/collective_rpc` endpoint (by the main rank only). A LoRA policy is merged into a copy (the base is never
edited); under DeepSpeed ZeRO-3 the shards are gathered for it.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from sem.engines.base import Engine
from sem.errors import EngineError
from sem.settings import Settings, VLLMSettings

log = logging.getLogger(__name__)
T = TypeVar("T")


def scratch_dir(need_bytes: int, candidates: list[Path] | None = None) -> Path:
    """Where a push's weights file goes: shared memory when it has room (no disk write), else the temp dir; an error
    saying what to change when neither has. A container's /dev/shm is 64 MB unless raised: a 3B model's 6 GB
    would fail mid-write."""
    candidates = candidates or [Path("/dev/shm"), Path(tempfile.gettempdir())]
    usable = [d for d in candidates if d.is_dir() and os.access(d, os.W_OK)]
    room = {d: shutil.disk_usage(d).free for d in usable}
    for d in usable:
        if room[d] >= need_bytes * 1.05:  # + the safetensors header and some slack
            return d
    free = ", ".join(f"{d} {b / 1e9:.2f} GB free" for d, b in room.items()) or "none writable"
    raise EngineError(
        f"no room for the {need_bytes / 1e9:.2f} GB weights file a push writes ({free}): give the container more "
        "shared memory (docker --shm-size 16g, a Kubernetes emptyDir with medium: Memory) or a larger temp dir"
    )


def policy_bytes(model: Any) -> int:
    """The size of the weights a push writes: every parameter and buffer but the adapter's, counted whole under
    ZeRO-3 (`ds_numel`: a rank's own tensor is a shard)."""
    tensors = [*model.named_parameters(), *model.named_buffers()]
    return sum(getattr(t, "ds_numel", t.numel()) * t.element_size() for name, t in tensors if "lora_" not in name)


def _base_name(peft_name: str) -> str:
    """`base_model.model.model.layers.0.q_proj.base_layer.weight` -> `model.layers.0.q_proj.weight`."""
    return peft_name.removeprefix("base_model.model.").replace(".base_layer.", ".")


def is_sharded(model: Any) -> bool:
    """DeepSpeed ZeRO-3 holds a shard of each weight on every rank (its parameters carry a `ds_id`)."""
    return any(hasattr(p, "ds_id") for p in model.parameters())


def _gathered(model: Any) -> Any:
    """Under ZeRO-3 every rank holds a shard of each weight: gather them (a collective: all ranks enter)."""
    from contextlib import nullcontext

    if not is_sharded(model):
        return nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(list(model.parameters()))


def save_policy_weights(model: Any, path: Path | None) -> int:
    """Write the policy's full weights under the base checkpoint's names; returns the number of tensors.

    A PEFT model's LoRA layers are merged out of place (`lora_merged`): the training weights stay as they are.
    Tied embeddings are written once (vLLM ties `lm_head` itself; safetensors refuses shared storage).
    `path=None`: take part in the gathering only (the ranks that do not write).
    """
    with _gathered(model):
        return _save_merged(model, path)


def _save_merged(model: Any, path: Path | None) -> int:
    from safetensors.torch import save_file

    peft = hasattr(model, "merge_adapter")
    merged = lora_merged(model) if peft else {}
    weights = {
        _base_name(name) if peft else name: merged.get(name, tensor).detach().contiguous()
        for name, tensor in model.state_dict().items()
        if not (peft and "lora_" in name)
    }
    if getattr(model.config, "tie_word_embeddings", False):
        weights.pop("lm_head.weight", None)
    if path is not None:
        save_file(weights, str(path))
    return len(weights)


def lora_merged(model: Any) -> dict[str, Any]:
    """The LoRA layers' merged weights, built out of place: base + scaling * B @ A in float32, cast once to the
    base's dtype. The training weights are never edited: merging into them and unmerging after, every step, moves a
    bfloat16 base by about the size of the LoRA update over a few hundred steps (issue #31)."""
    import torch
    from peft.tuners.lora import LoraLayer

    out = {}
    with torch.no_grad():
        for name, module in model.named_modules():
            if not isinstance(module, LoraLayer) or module.merged:
                continue
            base = module.get_base_layer().weight
            total = base.float()
            for adapter in module.active_adapters:
                if adapter not in module.lora_A:
                    continue
                delta = module.lora_B[adapter].weight.float() @ module.lora_A[adapter].weight.float()
                if getattr(module, "fan_in_fan_out", False):
                    delta = delta.T
                total = total + delta * module.scaling[adapter]
            out[f"{name}.base_layer.weight"] = total.to(base.dtype)
    return out


class RolloutEngine:
    """A vLLM engine for rollouts on a background event loop, with weight pushes; `run(coro)` runs a coroutine on it.

    `server_url`: a `vllm serve` started with `--worker-extension-cls sem.engines.vllm.WeightLoader`,
    `--logprobs-mode processed_logprobs` and `VLLM_SERVER_DEV_MODE=1`, on this machine (it reads the weights file
    from `weights_dir`). Otherwise vLLM runs in this process.
    """

    def __init__(
        self,
        model_path: str,
        *,
        server_url: str | None = None,
        weights_dir: Path | None = None,
        dtype: str = "float32",
        max_model_len: int = 2048,
        kv_cache_gib: float = 1.0,
        gpu_memory_utilization: float = 0.3,
        max_num_seqs: int = 64,
        seed: int = 0,
        block_size: int | None = None,
    ) -> None:
        self.server_url = server_url.rstrip("/") if server_url else None
        self.weights_dir = weights_dir  # None: chosen at the first push, by the file's size (scratch_dir)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="sem-rollout-vllm", daemon=True)
        self._thread.start()
        import torch

        from trainer.train.ranks import engine_eager

        settings = Settings(
            model=model_path,
            engine_url=server_url,
            dtype=dtype,
            max_model_len=max_model_len,
            seed=seed,
            vllm=VLLMSettings(
                kv_cache_gib=kv_cache_gib,
                gpu_memory_utilization=gpu_memory_utilization,
                max_num_seqs=max_num_seqs,
                block_size=block_size,
                enforce_eager=engine_eager(torch.cuda.is_available()),  # CUDA graphs on a GPU
            ),
        )
        self.engine: Engine = self.run(self._start(model_path, settings))
        self.pushes: list[float] = []  # seconds each weight push took

    async def _start(self, model_path: str, settings: Settings) -> Engine:
        if self.server_url:
            from sem.engines.openai import OpenAIEngine

            return await OpenAIEngine.start(model_path, settings)
        from sem.engines.vllm import VLLMEngine

        # processed log-probs: after temperature, as the policy's own log-probs in the loss are computed
        return await VLLMEngine.start(model_path, settings, reloadable=True, logprobs_mode="processed_logprobs")

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def push_weights(self, model: Any, *, write: bool = True) -> float:
        """Copy the policy's current weights into the engine; returns the seconds it took.

        With one server for several ranks only one writes (`write=False` elsewhere: gather, do not send).
        """
        started = time.perf_counter()
        path = None
        if write:
            if self.weights_dir is None:
                self.weights_dir = scratch_dir(policy_bytes(model))
            path = self.weights_dir / f"sem-policy-{os.getpid()}-{threading.get_ident()}.safetensors"
        try:
            count = save_policy_weights(model, path)
            if path is not None:
                self.run(self._load(str(path)))
        finally:
            if path is not None:
                path.unlink(missing_ok=True)
        seconds = time.perf_counter() - started
        self.pushes.append(seconds)
        log.debug("pushed %d tensors to vLLM in %.2f s", count, seconds)
        return seconds

    async def _load(self, path: str) -> None:
        if not self.server_url:
            await self.engine.load_weights(path)  # type: ignore[attr-defined]
            return
        import httpx

        async with httpx.AsyncClient(base_url=self.server_url, timeout=600) as client:
            for route, body in (("/collective_rpc", {"method": "sem_load_weights", "args": [path]}),
                                ("/reset_prefix_cache", None)):  # fmt: skip
                r = await client.post(route, json=body)
                if r.status_code >= 400:
                    raise EngineError(
                        f"the vLLM server at {self.server_url} refused {route} ({r.status_code}: {r.text[:200]}); "
                        "start it with VLLM_SERVER_DEV_MODE=1 and --worker-extension-cls sem.engines.vllm.WeightLoader"
                    )

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        try:
            self.run(self.engine.aclose())
            self.run(self._loop.shutdown_asyncgens())  # finished streams still hold the engine
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)
            self._loop.close()
            gc.collect()  # AsyncLLM's __del__ shuts down again and fails if left to interpreter exit
