"""transformers `generate` as an Engine: the reference path, and the trainer's policy where vLLM does not run.

One request runs at a time (a lock): `generate` on 2 CPU cores gains nothing from threads. The whole
generation comes back as one Delta.

Stop strings are checked by decoding the tail of the new tokens after each step: transformers' own
`stop_strings` builds a table over the whole vocabulary on every call (~1.6 s for SmolLM2 on 2 cores, more than
the generation itself for a short search call).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

from sem.engines.base import Delta, SamplingOptions, first_stop
from sem.errors import EngineError
from sem.settings import Settings


class HFEngine:
    name = "hf"

    def __init__(self, model: Any, tokenizer: Any, model_name: str) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.model_name = model_name
        self._lock = asyncio.Lock()
        self._cancelled: set[str] = set()
        self._guard = threading.Lock()
        self.adapters: set[str] = set()

    @classmethod
    async def start(cls, model_path: str, settings: Settings) -> HFEngine:
        engine = await asyncio.to_thread(cls.load, model_path, settings.dtype, settings.served_model_name)
        if settings.adapters:
            await asyncio.to_thread(engine.load_adapters, settings.adapters)
        return engine

    def load_adapters(self, adapters: dict[str, str]) -> None:
        """LoRA adapters by name over the model (PEFT), one active per generation: the lock serializes them."""
        from peft import PeftModel

        for name, path in adapters.items():
            if self.adapters:
                self.model.load_adapter(path, adapter_name=name)
            else:
                self.model = PeftModel.from_pretrained(self.model, path, adapter_name=name).eval()
            self.adapters.add(name)

    @classmethod
    def load(cls, model_path: str, dtype: str = "auto", served_name: str | None = None) -> HFEngine:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        # On the CPU bfloat16 matmuls without AMX make the prefill ~6x slower than float32 (measured: 1.96 s vs
        # 0.34 s for a 160-token prompt); `auto` therefore computes in float32 there, in bfloat16 on a GPU.
        cuda = torch.cuda.is_available()
        if dtype == "auto":
            torch_dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float32
        else:
            torch_dtype = getattr(torch, dtype)
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch_dtype)
        if cuda:
            model.to("cuda")
        model.eval()
        return cls(model, tokenizer, served_name or model_path)

    async def generate(
        self, prompt_ids: list[int], options: SamplingOptions, *, request_id: str
    ) -> AsyncIterator[Delta]:
        async with self._lock:
            try:
                delta = await asyncio.to_thread(self._generate_sync, prompt_ids, options, request_id)
            except asyncio.CancelledError:
                await self.abort(request_id)  # the worker thread sees the flag and stops at the next token
                raise
            finally:
                with self._guard:
                    self._cancelled.discard(request_id)
        yield delta

    def _generate_sync(self, prompt_ids: list[int], options: SamplingOptions, request_id: str) -> Delta:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        engine = self
        start = len(prompt_ids)
        stops = options.stop
        # A stop string spans at most one token per character; two more cover a partly decoded first token.
        window = max((len(stop) for stop in stops), default=0) + 2

        class _StopOrCancel(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                with engine._guard:
                    stop = request_id in engine._cancelled
                if not stop and stops and input_ids.shape[1] - start > options.min_tokens:
                    tail = engine.tokenizer.decode(input_ids[0, start:][-window:], skip_special_tokens=True)
                    stop = any(s in tail for s in stops)
                return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)

        if options.seed is not None:
            torch.manual_seed(options.seed)
        sample = options.temperature > 0
        # The policy the trainer hands in may sit on a GPU: the prompt goes where its weights are.
        inputs = torch.tensor([prompt_ids], dtype=torch.long, device=self.model.device)
        if options.adapter is not None and options.adapter not in self.adapters:
            raise EngineError(f"no adapter named {options.adapter!r} is loaded")
        if options.adapter is not None:
            self.model.set_adapter(options.adapter)
        try:
            with torch.inference_mode(), self._own_weights(options.adapter):
                out = self.model.generate(
                    inputs,
                    attention_mask=torch.ones_like(inputs),
                    max_new_tokens=options.max_tokens,
                    min_new_tokens=options.min_tokens or None,
                    do_sample=sample,
                    temperature=options.temperature if sample else None,
                    top_p=options.top_p if sample else None,
                    top_k=None,
                    stopping_criteria=StoppingCriteriaList([_StopOrCancel()]),
                    suppress_tokens=options.suppress_token_ids or None,
                    return_dict_in_generate=True,
                    output_scores=options.logprobs,
                    pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
                )
        except Exception as exc:  # torch/transformers raise many types; the caller needs one
            raise EngineError(f"generation failed: {exc}") from exc
        new_ids: list[int] = out.sequences[0, len(prompt_ids) :].tolist()
        logprobs = None
        if options.logprobs:
            scores = self.model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)
            logprobs = scores[0].tolist()
        return self._finish(new_ids, logprobs, options, request_id)

    def _own_weights(self, adapter: str | None) -> Any:
        """The adapters off for a generation that names none (the engine's own model)."""
        import contextlib

        return self.model.disable_adapter() if self.adapters and adapter is None else contextlib.nullcontext()

    def _finish(self, ids: list[int], logprobs: list[float] | None, options: SamplingOptions, request_id: str) -> Delta:
        eos = self.tokenizer.eos_token_id
        # Cut after the first stop string (generate may overshoot by a token), keeping the stop in the text.
        # Under min_tokens, stops only count after the first min_tokens tokens.
        head = len(self.tokenizer.decode(ids[: options.min_tokens], skip_special_tokens=True))
        for n in range(options.min_tokens + 1, len(ids) + 1):
            text = self.tokenizer.decode(ids[:n], skip_special_tokens=True)
            stop, cut = first_stop(text[head:], options.stop)
            if stop or ids[n - 1] == eos:
                end = head + cut
                return Delta(text[:end], ids[:n], logprobs[:n] if logprobs else logprobs, "stop", stop)
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        with self._guard:
            cancelled = request_id in self._cancelled
        reason = "abort" if cancelled else "length"
        return Delta(text, ids, logprobs, reason)

    async def abort(self, request_id: str) -> None:
        with self._guard:
            self._cancelled.add(request_id)

    async def check_health(self) -> None:
        return None

    async def aclose(self) -> None:
        return None
