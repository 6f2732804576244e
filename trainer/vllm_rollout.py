"""GRPO rollouts through vLLM: one engine for the whole run, the policy's weights pushed after every optimizer step.

The engine is SEM's own `VLLMEngine` (the one the service answers with), started on an event loop in its own thread:
AsyncLLM binds to the loop it started on, while TRL calls the rollout synchronously once a step. Weights travel as
one safetensors file in shared memory, loaded inside vLLM's engine process by a worker extension
(`sem.engines.vllm.WeightLoader`); a LoRA policy is merged for the copy and unmerged after.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import tempfile
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from sem.engines.vllm import VLLMEngine
from sem.settings import Settings, VLLMSettings

log = logging.getLogger(__name__)
T = TypeVar("T")


def _scratch_dir() -> Path:
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())


def _base_name(peft_name: str) -> str:
    """`base_model.model.model.layers.0.q_proj.base_layer.weight` -> `model.layers.0.q_proj.weight`."""
    return peft_name.removeprefix("base_model.model.").replace(".base_layer.", ".")


def save_policy_weights(model: Any, path: Path) -> int:
    """Write the policy's full weights under the base checkpoint's names; returns the number of tensors.

    A PEFT model is merged for the copy and unmerged after, so training continues on the adapter alone.
    Tied embeddings are written once (vLLM ties `lm_head` itself; safetensors refuses shared storage).
    """
    from safetensors.torch import save_file

    peft = hasattr(model, "merge_adapter")
    if peft:
        model.merge_adapter()
    try:
        state = model.state_dict()
        weights = {
            _base_name(name) if peft else name: tensor.detach().contiguous()
            for name, tensor in state.items()
            if not (peft and "lora_" in name)
        }
        if getattr(model.config, "tie_word_embeddings", False):
            weights.pop("lm_head.weight", None)
        save_file(weights, str(path))
    finally:
        if peft:
            model.unmerge_adapter()
    return len(weights)


class RolloutEngine:
    """SEM's vLLM engine on a background event loop, with weight pushes; `run(coro)` runs a coroutine on it."""

    def __init__(
        self,
        model_path: str,
        *,
        dtype: str = "float32",
        max_model_len: int = 2048,
        kv_cache_gib: float = 1.0,
        max_num_seqs: int = 64,
        seed: int = 0,
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="sem-rollout-vllm", daemon=True)
        self._thread.start()
        settings = Settings(
            model=model_path,
            dtype=dtype,
            max_model_len=max_model_len,
            seed=seed,
            vllm=VLLMSettings(kv_cache_gib=kv_cache_gib, max_num_seqs=max_num_seqs),
        )
        # processed log-probs: after temperature, as the policy's own log-probs in the loss are computed
        self.engine: VLLMEngine = self.run(
            VLLMEngine.start(model_path, settings, reloadable=True, logprobs_mode="processed_logprobs")
        )
        self.pushes: list[float] = []  # seconds each weight push took

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def push_weights(self, model: Any) -> float:
        """Copy the policy's current weights into the engine; returns the seconds it took."""
        started = time.perf_counter()
        path = _scratch_dir() / f"sem-policy-{os.getpid()}-{threading.get_ident()}.safetensors"
        try:
            count = save_policy_weights(model, path)
            self.run(self.engine.load_weights(str(path)))
        finally:
            path.unlink(missing_ok=True)
        seconds = time.perf_counter() - started
        self.pushes.append(seconds)
        log.debug("pushed %d tensors to vLLM in %.2f s", count, seconds)
        return seconds

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
