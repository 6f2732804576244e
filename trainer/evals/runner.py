"""One bounded runner for every batch of answers the trainer asks for (labelling, judging gates, `trainer eval` on a
local engine or a running service): at most `concurrency` in flight, so the engine batches them, with a bar."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from tqdm import tqdm


async def bounded(jobs: list[Callable[[], Any]], concurrency: int, desc: str) -> list[Any]:
    """Run coroutine factories with at most `concurrency` in flight (the engine batches them), with a bar."""
    gate = asyncio.Semaphore(concurrency)
    bar = tqdm(total=len(jobs), desc=desc, unit=" answers")

    async def one(job: Callable[[], Any]) -> Any:
        async with gate:
            result = await job()
        bar.update()
        return result

    try:
        return await asyncio.gather(*(one(j) for j in jobs))
    finally:
        bar.close()
