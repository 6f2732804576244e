"""The `openai` engine against a real vLLM OpenAI-compatible server on 127.0.0.1 (the remote-engine mode)."""

from __future__ import annotations

import pytest

from sem.cache import CachedSearch
from sem.engines import build_engine
from sem.engines.base import SamplingOptions
from sem.loop import LoopOptions, SearchLoop, SearchPolicy
from sem.search.bm25 import BM25Backend
from sem.settings import EngineKind, Settings
from tests.conftest import free_port


@pytest.fixture(scope="module")
async def engine(vllm_server: str, settings):
    remote = Settings(engine=EngineKind.openai, engine_url=vllm_server, model=settings.model_path,
                      home=settings.home)  # fmt: skip
    engine = await build_engine(remote)
    yield engine
    await engine.aclose()


async def test_finds_the_served_name_and_keeps_stop_strings(engine) -> None:
    assert engine.model_name == "smol"  # SEM_MODEL was a path; the server calls it "smol"
    tok = engine.tokenizer
    prompt = tok.encode("<|im_start|>user\nCount: one, two, three<|im_end|>\n<|im_start|>assistant\n",
                        add_special_tokens=False)  # fmt: skip
    pieces = [d async for d in engine.generate(prompt, SamplingOptions(max_tokens=40, stop=[","]), request_id="t1")]
    text = "".join(d.text for d in pieces)
    ids = [t for d in pieces for t in d.token_ids]
    assert pieces[-1].finish_reason in ("stop", "length")
    if pieces[-1].finish_reason == "stop" and pieces[-1].stop:
        assert text.endswith(",") and pieces[-1].stop == ","
    assert tok.decode(ids, skip_special_tokens=True) == text


async def test_the_loop_runs_on_the_remote_engine(engine, settings) -> None:
    backend = BM25Backend(settings.corpus_path)
    await backend.load()
    loop = SearchLoop(engine, CachedSearch(backend))
    trace = await loop.run("Who wrote Hamlet?", LoopOptions(policy=SearchPolicy.always, max_tokens=48, logprobs=True))
    assert trace.search_count == 1 and trace.searches[0].passages[0].title == "Hamlet"
    inserted = engine.tokenizer.decode([t for t, m in zip(trace.completion_ids, trace.loss_mask, strict=True) if not m])
    assert inserted == "".join(s.text for s in trace.segments if not s.generated)
    assert trace.answer
    assert trace.logprobs is not None and len(trace.logprobs) == len(trace.completion_ids)


async def test_unreachable_server_is_an_engine_error(settings) -> None:
    from sem.errors import EngineError

    with pytest.raises(EngineError, match="not reachable"):
        await build_engine(Settings(engine=EngineKind.openai, engine_url=f"http://127.0.0.1:{free_port()}",
                                    model=settings.model_path))  # fmt: skip
