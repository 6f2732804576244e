"""Which rank does what in a multi-process run, read from the variables `accelerate launch` / torchrun set (RANK,
LOCAL_RANK, WORLD_SIZE), so that it holds before any process group exists and can be tested with env vars alone."""

from __future__ import annotations

import os
from typing import Literal

PushRole = Literal["write", "gather", "skip"]


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    """The process that logs and talks to a shared vLLM server (rank 0 of the whole run)."""
    return rank() == 0


def push_role(*, server: bool, sharded: bool, main: bool) -> PushRole:
    """What a rank does for a weight push.

    Colocated, every rank feeds its own engine: write. With one server for all ranks the main rank writes; under
    ZeRO-3 the others still enter the gathering (a collective) and drop the result; under ZeRO-2 or DDP every rank
    holds the full weights, so the others do nothing."""
    if not server or main:
        return "write"
    return "gather" if sharded else "skip"


def colocated_placement_error(world_size: int, on_gpu: bool) -> str | None:
    """None if colocated engines can start, else why not.

    vLLM started from a rank takes the first visible GPU: with several ranks on one node every engine would land on
    GPU 0 (and the third or fourth fail for memory). Until engines are placed per rank, that layout is refused."""
    if world_size <= 1 or not on_gpu:
        return None
    return (
        f"colocated vLLM on {world_size} GPU processes would start every rank's engine on GPU 0 (per-rank engine "
        "placement is not supported yet, issue #31): roll out on a vLLM server (vllm_server_url, one GPU of the "
        "node, deploy/README.md 'Training on GPUs') or train on one process"
    )


def engine_eager(on_gpu: bool) -> bool:
    """vLLM's enforce_eager for a rollout engine: on CPUs graph capture only costs start-up time; on a GPU CUDA
    graphs are much of vLLM's decoding speed."""
    return not on_gpu
