"""Engines are imported lazily: `import sem` must not pull in torch or vLLM."""

from __future__ import annotations

import importlib.util
import logging

from sem.engines.base import Delta, Engine, SamplingOptions
from sem.errors import ConfigError
from sem.settings import EngineKind, Settings

__all__ = ["Delta", "Engine", "SamplingOptions", "build_engine", "resolve_engine_kind"]

log = logging.getLogger(__name__)


def resolve_engine_kind(kind: EngineKind) -> EngineKind:
    """`auto` means vLLM when it is installed, transformers otherwise."""
    if kind is not EngineKind.auto:
        return kind
    return EngineKind.vllm if importlib.util.find_spec("vllm") is not None else EngineKind.hf


async def build_engine(settings: Settings) -> Engine:
    """Start the engine the settings name, on the model they name, with a chat template that renders SEM's prompt
    (`ConfigError` otherwise: a model it cannot serve is refused here, not on every request)."""
    import asyncio

    from sem.templates import load_chat_template, use_chat_template

    # Checked before the engine starts (seconds, not the engine's ~20 s), then given to the engine's tokenizer.
    template = await asyncio.to_thread(
        load_chat_template, settings.tokenizer or settings.model_path, settings.chat_template
    )
    engine = await _start_engine(settings)
    try:
        use_chat_template(engine.tokenizer, template, settings.model_path)
    except ConfigError:
        await engine.aclose()
        raise
    return engine


async def _start_engine(settings: Settings) -> Engine:
    from sem.assets import ensure_model

    model = settings.model_path
    kind = resolve_engine_kind(settings.engine)
    if settings.model in (None, "base") and not (kind is EngineKind.openai and settings.tokenizer):
        ensure_model(settings.home_dir)
    log.info("starting %s engine on %s", kind.value, model)
    if kind is EngineKind.vllm:
        from sem.engines.vllm import VLLMEngine

        return await VLLMEngine.start(model, settings)
    if kind is EngineKind.hf:
        from sem.engines.hf import HFEngine

        return await HFEngine.start(model, settings)
    if kind is EngineKind.openai:
        from sem.engines.openai import OpenAIEngine

        return await OpenAIEngine.start(model, settings)
    raise ConfigError(f"unknown engine {kind!r}")
