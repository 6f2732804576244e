"""transformers `generate` as an Engine: the reference path, and the trainer's policy where vLLM does not run.

Requests that arrive while a generation runs wait, and then go together as one batch (left-padded, each row with
its own stops and token limit): one `generate` at a time, since threads gain nothing on 2 CPU cores, but a batch of
rollouts or concurrent clients shares each forward (what a GPU needs to be worth it). Rows batch together when
everything `generate` takes for the whole batch agrees (temperature, top_p, min_tokens, suppressed tokens, adapter,
seed); the rest wait for the next batch. The whole generation comes back as one Delta.

Stop strings are checked by decoding the tail of the new tokens after each step: transformers' own
`stop_strings` builds a table over the whole vocabulary on every call (~1.6 s for SmolLM2 on 2 cores, more than
the generation itself for a short search call).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from sem.engines.base import Delta, SamplingOptions, first_stop
from sem.errors import EngineError
from sem.settings import Settings

MAX_BATCH = 64  # rows a generate call takes: a decide step's 16 x 4 rollouts


@dataclass
class _Request:
    prompt_ids: list[int]
    options: SamplingOptions
    request_id: str
    result: asyncio.Future

    def batch_key(self) -> tuple:
        """What `generate` takes once for the whole batch; rows with the same key can share one call."""
        o = self.options
        return (o.temperature, o.top_p if o.temperature > 0 else None, o.min_tokens, tuple(o.suppress_token_ids),
                o.adapter, o.seed)  # fmt: skip


class HFEngine:
    name = "hf"

    def __init__(self, model: Any, tokenizer: Any, model_name: str, max_batch: int = MAX_BATCH) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.max_batch = max_batch
        self._waiting: list[_Request] = []
        self._drainer: asyncio.Task | None = None
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
        if options.adapter is not None and options.adapter not in self.adapters:
            raise EngineError(f"no adapter named {options.adapter!r} is loaded")
        request = _Request(list(prompt_ids), options, request_id, asyncio.get_running_loop().create_future())
        request.result.add_done_callback(lambda _: self._forget(request_id))  # the abort flag lives as long as its row
        self._waiting.append(request)
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain())
        try:
            delta = await asyncio.shield(request.result)  # the batch goes on for the others if this caller leaves
        except asyncio.CancelledError:
            if request in self._waiting:  # not started: dropped
                self._waiting.remove(request)
                request.result.cancel()
            elif not request.result.done():
                await self.abort(request_id)  # in a running batch: its row stops at the next token
            raise
        yield delta

    def _forget(self, request_id: str) -> None:
        with self._guard:
            self._cancelled.discard(request_id)

    async def _drain(self) -> None:
        """Batches until nobody waits: the first waiting request and every one that can share its call."""
        while self._waiting:
            key = self._waiting[0].batch_key()
            batch = [r for r in self._waiting if r.batch_key() == key][: self.max_batch]
            for r in batch:
                self._waiting.remove(r)
            try:
                deltas = await asyncio.to_thread(self._generate_batch, batch)
            except Exception as exc:  # torch/transformers raise many types; every caller of the batch needs one
                error = exc if isinstance(exc, EngineError) else EngineError(f"generation failed: {exc}")
                for r in batch:
                    if not r.result.done():
                        r.result.set_exception(error)
                continue
            for r, delta in zip(batch, deltas, strict=True):
                if not r.result.done():
                    r.result.set_result(delta)

    def _generate_batch(self, batch: list[_Request]) -> list[Delta]:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        engine = self
        first = batch[0].options
        width = max(len(r.prompt_ids) for r in batch)
        pad = self.tokenizer.pad_token_id or self.tokenizer.eos_token_id
        # Left-padded: every row's new tokens start at `width`; the mask keeps the pads out of attention.
        rows = [[pad] * (width - len(r.prompt_ids)) + r.prompt_ids for r in batch]
        mask = [[0] * (width - len(r.prompt_ids)) + [1] * len(r.prompt_ids) for r in batch]
        # A stop string spans at most one token per character; two more cover a partly decoded first token.
        windows = [max((len(stop) for stop in r.options.stop), default=0) + 2 for r in batch]
        ended: list[int | None] = [None] * len(batch)  # new tokens when the row's own criteria first held

        class _StopOrCancel(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                new = input_ids.shape[1] - width
                for i, r in enumerate(batch):
                    if ended[i] is None and engine._row_done(r, input_ids[i, width:], new, windows[i]):
                        ended[i] = new
                return torch.tensor([e is not None for e in ended], dtype=torch.bool, device=input_ids.device)

        if first.seed is not None:
            torch.manual_seed(first.seed)
        sample = first.temperature > 0
        # The policy the trainer hands in may sit on a GPU: the prompt goes where its weights are.
        inputs = torch.tensor(rows, dtype=torch.long, device=self.model.device)
        if first.adapter is not None:
            self.model.set_adapter(first.adapter)
        with torch.inference_mode(), self._own_weights(first.adapter):
            out = self.model.generate(
                inputs,
                attention_mask=torch.tensor(mask, dtype=torch.long, device=self.model.device),
                max_new_tokens=max(r.options.max_tokens for r in batch),
                min_new_tokens=first.min_tokens or None,
                do_sample=sample,
                temperature=first.temperature if sample else None,
                top_p=first.top_p if sample else None,
                top_k=None,
                stopping_criteria=StoppingCriteriaList([_StopOrCancel()]),
                suppress_tokens=first.suppress_token_ids or None,
                return_dict_in_generate=True,
                output_scores=any(r.options.logprobs for r in batch),
                output_logits=any(r.options.top_logprobs for r in batch),  # raw: the model's own distribution
                pad_token_id=pad,
            )
        scores = None
        if any(r.options.logprobs for r in batch):
            scores = self.model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)
        deltas = []
        for i, r in enumerate(batch):
            n = min(ended[i] or out.sequences.shape[1] - width, r.options.max_tokens)  # a finished row's pads dropped
            ids: list[int] = out.sequences[i, width : width + n].tolist()
            logprobs = scores[i, :n].tolist() if scores is not None and r.options.logprobs else None
            top = _top_logprobs(out.logits, i, n, r.options.top_logprobs) if r.options.top_logprobs else None
            deltas.append(self._finish(ids, logprobs, r.options, r.request_id, top))
        return deltas

    def _row_done(self, request: _Request, new_ids: Any, new: int, window: int) -> bool:
        """One row's stop: cancelled, at its own token limit, or (after min_tokens) a stop string in its tail."""
        with self._guard:
            if request.request_id in self._cancelled:
                return True
        options = request.options
        if new >= options.max_tokens:
            return True
        if options.stop and new > options.min_tokens:
            tail = self.tokenizer.decode(new_ids[-window:], skip_special_tokens=True)
            return any(s in tail for s in options.stop)
        return False

    def _own_weights(self, adapter: str | None) -> Any:
        """The adapters off for a generation that names none (the engine's own model)."""
        import contextlib

        return self.model.disable_adapter() if self.adapters and adapter is None else contextlib.nullcontext()

    def _finish(self, ids: list[int], logprobs: list[float] | None, options: SamplingOptions, request_id: str,
                top: list[dict[int, float]] | None = None) -> Delta:  # fmt: skip
        eos = self.tokenizer.eos_token_id
        # Cut after the first stop string (generate may overshoot by a token), keeping the stop in the text.
        # Under min_tokens, stops only count after the first min_tokens tokens.
        head = len(self.tokenizer.decode(ids[: options.min_tokens], skip_special_tokens=True))
        for n in range(options.min_tokens + 1, len(ids) + 1):
            text = self.tokenizer.decode(ids[:n], skip_special_tokens=True)
            stop, cut = first_stop(text[head:], options.stop)
            if stop or ids[n - 1] == eos:
                end = head + cut
                return Delta(text[:end], ids[:n], logprobs[:n] if logprobs else logprobs, "stop", stop,
                             top[:n] if top else top)  # fmt: skip
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        with self._guard:
            cancelled = request_id in self._cancelled
        reason = "abort" if cancelled else "length"
        return Delta(text, ids, logprobs, reason, top_logprobs=top)

    async def abort(self, request_id: str) -> None:
        with self._guard:
            self._cancelled.add(request_id)

    async def check_health(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


def _top_logprobs(logits: Any, row: int, n: int, k: int) -> list[dict[int, float]]:
    """The k most likely tokens' log-probabilities at each of a row's first n positions, from the raw logits."""
    import torch

    out = []
    for step in logits[:n]:
        values, ids = torch.log_softmax(step[row].float(), dim=-1).topk(k)
        out.append(dict(zip(ids.tolist(), values.tolist(), strict=True)))
    return out
