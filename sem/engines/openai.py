"""A remote OpenAI-compatible completion server as an Engine: vLLM's own server, vLLM production-stack, KServe,
Ray Serve LLM, llama.cpp's server. The loop, search and cache stay in our service; the model scales on its own.

Resumes send the whole context as token ids to `/v1/completions`, so a server with prefix caching prefills only the
new tokens. vLLM's extensions give exact behaviour (`include_stop_str_in_output`, `return_token_ids`,
`stop_reason`); on a server without them the stop string is restored from the request and the token ids come from
our tokenizer.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import httpx

from sem.engines.base import Delta, SamplingOptions, first_stop
from sem.errors import ConfigError, EngineError

if TYPE_CHECKING:
    from sem.settings import Settings


class OpenAIEngine:
    name = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        tokenizer: Any,
        *,
        api_key: str | None = None,
        timeout_s: float = 600.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/").removesuffix("/v1")
        self.model_name = model
        self.tokenizer = tokenizer
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = client or httpx.AsyncClient(base_url=self.base_url, timeout=timeout_s, headers=headers)

    @classmethod
    async def start(cls, model_path: str, settings: Settings) -> OpenAIEngine:
        """`SEM_ENGINE_URL` names the server; `SEM_MODEL` its model (and where our tokenizer loads from)."""
        from transformers import AutoTokenizer

        if not settings.engine_url:
            raise ConfigError("the openai engine needs SEM_ENGINE_URL (e.g. http://vllm:8000)")
        key = settings.engine_api_key.get_secret_value() if settings.engine_api_key else None
        engine = cls(settings.engine_url, model_path, AutoTokenizer.from_pretrained(settings.tokenizer or model_path),
                     api_key=key)  # fmt: skip
        served = await engine.served_models()
        if model_path not in served:
            if len(served) != 1:
                raise ConfigError(f"{settings.engine_url} serves {served}; set SEM_MODEL to one of them")
            engine.model_name = served[0]  # the server names it differently (e.g. --served-model-name)
        return engine

    async def served_models(self) -> list[str]:
        try:
            try:
                r = await self._client.get("/v1/models")
            except httpx.RemoteProtocolError:  # a pooled keep-alive connection the server had just closed: once more
                r = await self._client.get("/v1/models")
            r.raise_for_status()
            return [m["id"] for m in r.json()["data"]]
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            raise EngineError(f"the model server at {self.base_url} is not reachable: {exc}") from exc

    async def generate(
        self, prompt_ids: list[int], options: SamplingOptions, *, request_id: str
    ) -> AsyncIterator[Delta]:
        body: dict[str, Any] = {
            "model": options.adapter or self.model_name,  # a remote vLLM serves its adapters by name
            "prompt": prompt_ids,
            "max_tokens": options.max_tokens,
            "temperature": options.temperature,
            "top_p": options.top_p,
            "stream": True,
            "include_stop_str_in_output": True,
            "return_token_ids": True,
            "skip_special_tokens": True,
        }
        if options.stop:
            body["stop"] = options.stop
        if options.min_tokens:
            body["min_tokens"] = options.min_tokens  # vLLM's extension
        if options.seed is not None:
            body["seed"] = options.seed
        if options.logprobs:
            body["logprobs"] = 0
        if options.top_logprobs:
            body["logprobs"] = options.top_logprobs
            body["return_tokens_as_token_ids"] = True  # vLLM's extension: "token_id:<id>", not a text piece
        if options.suppress_token_ids:
            body["logit_bias"] = {str(t): -100 for t in options.suppress_token_ids}
        text = ""
        try:
            async with self._client.stream(
                "POST", "/v1/completions", json=body, headers={"X-Request-Id": request_id}
            ) as r:
                if r.status_code >= 400:
                    await r.aread()
                    raise EngineError(f"the model server answered {r.status_code}: {r.text[:300]}")
                async for line in r.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    chunk = json.loads(data)
                    if "error" in chunk:
                        raise EngineError(f"the model server failed: {chunk['error']}")
                    for choice in chunk.get("choices", []):
                        delta = self._delta(choice, options, text)
                        text += delta.text
                        yield delta
        except httpx.HTTPError as exc:
            raise EngineError(f"the model server at {self.base_url} failed: {exc}") from exc

    def _delta(self, choice: dict[str, Any], options: SamplingOptions, so_far: str) -> Delta:
        piece = choice.get("text", "")
        finish = choice.get("finish_reason")
        stop_reason = choice.get("stop_reason")
        stop = stop_reason if isinstance(stop_reason, str) else None
        if finish == "stop" and stop and not (so_far + piece).endswith(stop):
            piece += stop  # a server that drops the stop string from the text
        ids = choice.get("token_ids")
        if ids is None:  # a server without return_token_ids: our tokenizer's reading of the text
            ids = self.tokenizer.encode(piece, add_special_tokens=False)
        logprobs = None
        if options.logprobs and choice.get("logprobs"):
            logprobs = [lp if lp is not None else 0.0 for lp in choice["logprobs"].get("token_logprobs", [])]
        if finish == "stop" and stop is None and options.stop:
            stop, _ = first_stop(so_far + piece, options.stop)
        top = _top_logprobs(choice.get("logprobs")) if options.top_logprobs else None
        return Delta(piece, list(ids), logprobs, finish, stop, top)

    async def abort(self, request_id: str) -> None:
        return None  # closing the stream is the abort: the server cancels a request whose client went away

    async def check_health(self) -> None:
        await self.served_models()

    async def aclose(self) -> None:
        await self._client.aclose()


def _top_logprobs(logprobs: dict[str, Any] | None) -> list[dict[int, float]] | None:
    """`top_logprobs` keyed by token id ("token_id:<id>", vLLM's `return_tokens_as_token_ids`), or None where the
    server gave none or keyed them by text (which names no token exactly).

    >>> _top_logprobs({"top_logprobs": [{"token_id:2": -0.1, "token_id:7": -2.5}]})
    [{2: -0.1, 7: -2.5}]
    >>> _top_logprobs({"top_logprobs": [{"<": -0.1}]}) is None
    True
    """
    positions = (logprobs or {}).get("top_logprobs")
    if not positions:
        return None
    try:
        return [{int(k.removeprefix("token_id:")): float(v) for k, v in (pos or {}).items()} for pos in positions]
    except ValueError:
        return None
