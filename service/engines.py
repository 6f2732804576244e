"""Engines of their own for the adapters (`SEM_ADAPTER_ENGINES=own`, issue #42): each adapter merged into the model
at start-up and served by a vLLM engine of its own, the CPU's cores split between the engines so that they do not
thrash each other (on 2 cores: two merged engines pinned one core each gave 0.86-0.96x one model's answers/s, two
unpinned 0.49-0.53x, vLLM's multi-LoRA on one engine 0.40x; BENCHMARKS.md)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

from sem.engines import Engine, build_engine
from sem.engines.supervisor import EngineFactory, SupervisedEngine
from sem.settings import Settings

BIND = "VLLM_CPU_OMP_THREADS_BIND"  # vLLM-CPU: the cores an engine's threads run on, read when it starts


def split_cores(cpus: int, engines: int) -> list[str]:
    """The cores each engine is bound to: contiguous blocks as even as they go, or one core each round-robin when
    there are more engines than cores.

    >>> split_cores(2, 2), split_cores(8, 3), split_cores(2, 3), split_cores(4, 1)
    (['0', '1'], ['0-2', '3-5', '6-7'], ['0', '1', '0'], ['0-3'])
    """
    if engines > cpus:
        return [str(i % cpus) for i in range(engines)]
    size, extra = divmod(cpus, engines)
    out, start = [], 0
    for i in range(engines):
        end = start + size + (i < extra) - 1
        out.append(str(start) if end == start else f"{start}-{end}")
        start = end + 1
    return out


def pinned(factory: EngineFactory, cores: str | None) -> EngineFactory:
    """`factory`, starting its engine on `cores` (None: as the environment says: an operator's own binding wins).
    The engine's processes take the binding from the environment when they are spawned: engines start one after
    the other, and a restart sets it again."""

    async def start() -> Engine:
        if cores is not None:
            os.environ[BIND] = cores
            os.environ["OMP_NUM_THREADS"] = str(_count(cores))
        return await factory()

    return start


def _count(cores: str) -> int:
    first, _, last = cores.partition("-")
    return int(last or first) - int(first) + 1


async def own_engine(settings: Settings, name: str, adapter: Path, cores: str | None,
                     on_event: Callable[[str, str], None]) -> Engine:  # fmt: skip
    """The adapter merged into the settings' model (cached under SEM_HOME), started by a supervisor of its own."""
    from sem.assets import merge_adapter_into, merged_adapter_dir

    merged = await asyncio.to_thread(merge_adapter_into, Path(settings.model_path), adapter,
                                     merged_adapter_dir(settings.home_dir, name))  # fmt: skip
    own = settings.model_copy(update={"model": str(merged), "adapters": {}, "served_model_name": name})
    engine = SupervisedEngine(pinned(lambda: build_engine(own), cores), settings.supervision, on_event=on_event)
    await engine.start()
    return engine
