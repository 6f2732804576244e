"""The arithmetic of a GRPO layout, checked before any GPU is rented (`trainer train --dry-run`): how many GPUs it
needs, whether a step's answers split into whole prompt groups, and a memory estimate per training GPU.

Pure arithmetic over a model's shape (its config.json) and the recipe: no torch, no TRL. The memory model is an
estimate with its assumptions written next to each term; it is meant to say which knob to turn, not to replace a
measurement (deploy/README.md, "Training on GPUs", says what was measured where).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

GIB = 2**30
BF16 = 2  # bytes: weights and activations under DeepSpeed's bf16 (the recipe's mixed precision)
FP32 = 4
ADAM_STATE = 12  # bytes per trainable parameter: fp32 master copy + Adam's two moments
PROMPT_TOKENS = 150  # the system prompt and a question, in tokens (SEM's template)
CHARS_PER_TOKEN = 4  # English passages
RUNTIME_GIB = 1.0  # CUDA context and allocator slack on every GPU
ZERO_BUCKETS_GIB = 2 * 5e8 * BF16 / GIB  # DeepSpeed's reduce and all-gather buckets (5e8 elements each, bf16)


@dataclass(frozen=True)
class ModelShape:
    """What the memory of a Llama-style decoder depends on (Llama, Qwen2, SmolLM2 share it)."""

    layers: int
    hidden: int
    intermediate: int
    vocab: int
    heads: int
    kv_heads: int
    tied: bool = True
    qkv_bias: bool = False

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * (self.hidden // self.heads)

    def linears(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each linear layer of one block, by its module name."""
        h, kv, i = self.hidden, self.kv_dim, self.intermediate
        return {"q_proj": (h, h), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (h, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}  # fmt: skip

    def params(self) -> int:
        block = sum(a * b for a, b in self.linears().values()) + 2 * self.hidden  # + two RMSNorms
        if self.qkv_bias:
            block += self.hidden + 2 * self.kv_dim
        embeddings = self.vocab * self.hidden * (1 if self.tied else 2)
        return embeddings + self.layers * block + self.hidden  # + the final norm

    def lora_params(self, r: int, targets: list[str]) -> int:
        """A rank-r adapter on `targets`: A (r x in) and B (out x r) per targeted linear."""
        return self.layers * sum(r * (a + b) for name, (a, b) in self.linears().items() if name in targets)

    def targeted_params(self, targets: list[str]) -> int:
        """The base weights the adapter sits on: the push builds a merged copy of each."""
        return self.layers * sum(a * b for name, (a, b) in self.linears().items() if name in targets)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ModelShape:
        return cls(
            layers=config["num_hidden_layers"], hidden=config["hidden_size"],
            intermediate=config["intermediate_size"], vocab=config["vocab_size"],
            heads=config["num_attention_heads"],
            kv_heads=config.get("num_key_value_heads") or config["num_attention_heads"],
            tied=bool(config.get("tie_word_embeddings", False)),
            qkv_bias=config.get("model_type") == "qwen2" or bool(config.get("attention_bias", False)),
        )  # fmt: skip


# Published shapes (their config.json), for a dry run on a machine that has not downloaded the model
KNOWN_SHAPES = {
    "Qwen/Qwen2.5-3B-Instruct": ModelShape(layers=36, hidden=2048, intermediate=11008, vocab=151936, heads=16,
                                           kv_heads=2, tied=True, qkv_bias=True),
    "Qwen/Qwen2.5-7B-Instruct": ModelShape(layers=28, hidden=3584, intermediate=18944, vocab=152064, heads=28,
                                           kv_heads=4, tied=False, qkv_bias=True),
}  # fmt: skip


def model_shape(model: str) -> ModelShape | None:
    """The shape of a local checkpoint (its base for a LoRA adapter) or of a known hub id; None if neither."""
    path = Path(model)
    adapter = path / "adapter_config.json"
    if adapter.is_file():
        return model_shape(json.loads(adapter.read_text())["base_model_name_or_path"])
    if (path / "config.json").is_file():
        return ModelShape.from_config(json.loads((path / "config.json").read_text()))
    return KNOWN_SHAPES.get(model)


def sequence_tokens(max_completion_length: int, max_searches: int, top_k: int, passage_chars: int) -> int:
    """Tokens of one rollout as the trainer sees it: prompt, the generated budget, and the inserted results (every
    search returns top_k passages of passage_chars; masked from the loss, but forward and backward carry them)."""
    results = max_searches * top_k * passage_chars // CHARS_PER_TOKEN
    return PROMPT_TOKENS + max_completion_length + results


@dataclass(frozen=True)
class Layout:
    """One training process's share of a run."""

    world_size: int  # training processes (one GPU each)
    zero_stage: int  # 0 (plain DDP), 1, 2 or 3
    micro_batch: int  # sequences per forward and backward (per_device_train_batch_size)
    seq_tokens: int  # tokens per sequence (sequence_tokens)
    completion_tokens: int  # of which the completion: logits are only computed over these
    lora_r: int  # 0: the whole model trains
    lora_targets: tuple[str, ...] = ()
    gradient_checkpointing: bool = False
    engine_share: float = 0.0  # of the GPU, held by a colocated vLLM engine (vllm_gpu_memory_utilization); 0: server
    reference_model: bool = False  # beta > 0 without LoRA: TRL keeps a frozen copy
    gpu_gib: float = 80.0


@dataclass(frozen=True)
class MemoryPlan:
    rows: list[tuple[str, float, str]]  # (term, GiB, how it was counted)
    training_gib: float  # the backward's peak
    push_gib: float  # the weight push's peak (between steps: no activations)
    gpu_gib: float

    @property
    def peak_gib(self) -> float:
        return max(self.training_gib, self.push_gib)

    @property
    def fits(self) -> bool:
        return self.peak_gib <= self.gpu_gib

    def table(self) -> str:
        lines = [f"{'memory per training GPU':<24}{'GiB':>8}  how"]
        lines += [f"{name:<24}{gib:>8.1f}  {how}" for name, gib, how in self.rows]
        lines.append(f"{'peak (training)':<24}{self.training_gib:>8.1f}  the backward of one micro-batch")
        lines.append(f"{'peak (push)':<24}{self.push_gib:>8.1f}  between steps: no activations, the merged copy")
        verdict = "fits" if self.fits else "does NOT fit"
        lines.append(f"{verdict} a {self.gpu_gib:.0f} GiB GPU ({self.peak_gib:.1f} GiB at the peak)")
        return "\n".join(lines)


def activation_bytes_per_token_layer(shape: ModelShape) -> int:
    """What one decoder layer keeps for the backward, per token, in bf16, with SDPA/flash attention (no
    sequence x sequence scores): attention ~ 7h + 4kv (norm and projection inputs, q/k/v before and after rotary,
    the attention output), MLP ~ 2h + 4i (its norm and input, gate, up, the activation and the product)."""
    return BF16 * (9 * shape.hidden + 4 * shape.kv_dim + 4 * shape.intermediate)


def estimate(shape: ModelShape, layout: Layout) -> MemoryPlan:
    """Bytes per training GPU, term by term (DeepSpeed bf16, AdamW)."""
    n = layout.world_size
    params = shape.params()
    trainable = shape.lora_params(layout.lora_r, list(layout.lora_targets)) if layout.lora_r else params
    weight_shards = n if layout.zero_stage >= 3 else 1
    weights = params * BF16 * (2 if layout.reference_model else 1) / weight_shards
    grads = trainable * FP32 / (n if layout.zero_stage >= 2 else 1)
    optimizer = trainable * ADAM_STATE / (n if layout.zero_stage >= 1 else 1)
    tokens = layout.micro_batch * layout.seq_tokens
    per_layer = activation_bytes_per_token_layer(shape)
    if layout.gradient_checkpointing:  # each layer's input kept, one layer recomputed at a time
        activations = tokens * (shape.layers * shape.hidden * BF16 + per_layer)
    else:
        activations = tokens * shape.layers * per_layer
    # bf16 logits over the completion and their gradient (TRL's log-softmax goes row by row)
    logits = layout.micro_batch * layout.completion_tokens * shape.vocab * BF16 * 2
    runtime = (RUNTIME_GIB + (ZERO_BUCKETS_GIB if layout.zero_stage >= 2 else 0.0)) * GIB
    engine = layout.engine_share * layout.gpu_gib * GIB
    targets = list(layout.lora_targets) if layout.lora_r else []
    merged = shape.targeted_params(targets) * BF16  # the push's merged copies (LoRA only)
    gathered = params * BF16 - weights if layout.zero_stage >= 3 else 0.0  # ZeRO-3 gathers the rest to push
    zero = f"ZeRO-{layout.zero_stage}" if layout.zero_stage else "DDP"
    ref = " x2 (reference model)" if layout.reference_model else ""
    ckpt = "gradient checkpointing" if layout.gradient_checkpointing else "no gradient checkpointing"
    rows = [
        ("weights", weights, f"{params / 1e9:.2f}B params in bf16{ref}" + (f" / {n}" if weight_shards > 1 else "")),
        ("gradients", grads, f"{trainable / 1e6:.1f}M trainable, fp32" + (f" / {n}" if layout.zero_stage >= 2 else "")),
        ("optimizer states", optimizer, "AdamW, 12 B a trainable param" + (f" / {n}" if layout.zero_stage else "")),
        ("activations", activations, f"{layout.micro_batch} x {layout.seq_tokens} tokens, {ckpt}"),
        ("logits", logits, f"{layout.micro_batch} x {layout.completion_tokens} x {shape.vocab} bf16 + gradient"),
        ("runtime", runtime, f"CUDA context, {zero}" + (" buckets" if layout.zero_stage >= 2 else "")),
        ("vLLM engine", engine, f"colocated: {layout.engine_share:g} of the GPU" if engine else "server: none here"),
        ("push copies", merged + gathered, ("merged LoRA weights" if merged else "none")
         + (" + gathered ZeRO-3 shards" if gathered else "")),
    ]  # fmt: skip
    static = weights + grads + optimizer + runtime + engine
    return MemoryPlan(
        rows=[(name, b / GIB, how) for name, b, how in rows],
        training_gib=(static + activations + logits) / GIB,
        push_gib=(static + merged + gathered) / GIB,
        gpu_gib=layout.gpu_gib,
    )


def what_to_change(shape: ModelShape, layout: Layout) -> list[str]:
    """For a plan that does not fit: each single change that helps, with the peak it leads to, best first."""
    options: list[tuple[str, Layout]] = []
    if not layout.gradient_checkpointing:
        options.append(("turn on gradient_checkpointing (recipe: gradient_checkpointing: true)",
                        replace(layout, gradient_checkpointing=True)))  # fmt: skip
    if layout.micro_batch > 1:
        half = layout.micro_batch // 2
        options.append((f"halve batch_size to {half} and double gradient_accumulation_steps (same answers a step)",
                        replace(layout, micro_batch=half)))  # fmt: skip
    if layout.engine_share > 0:
        options.append(("roll out on a vLLM server (vllm_server_url) instead of colocating",
                        replace(layout, engine_share=0.0)))  # fmt: skip
    if layout.zero_stage < 3:
        options.append(("ZeRO-3 (deploy/train/accelerate-deepspeed-zero3.yaml)", replace(layout, zero_stage=3)))
    peaks = [(estimate(shape, changed).peak_gib, text) for text, changed in options]
    return [f"{text}: peak {peak:.1f} GiB" for peak, text in sorted(peaks)]


def gpus_needed(world_size: int, server_gpus: int) -> int:
    """Training processes take a GPU each; a vLLM server takes its own (0 when colocated)."""
    return world_size + server_gpus


def check_gpus(world_size: int, server_gpus: int, gpus: int) -> str | None:
    """None if the layout fits the node, else what to change."""
    needed = gpus_needed(world_size, server_gpus)
    if needed <= gpus:
        return None
    if server_gpus:
        return (f"{world_size} training processes + {server_gpus} GPU(s) for the vLLM server = {needed} GPUs, the "
                f"node has {gpus}: run {gpus - server_gpus} training processes (--world-size / accelerate's "
                f"num_processes {gpus - server_gpus})")  # fmt: skip
    return f"{world_size} training processes need {needed} GPUs, the node has {gpus}: --world-size {gpus}"


def check_groups(micro_batch: int, world_size: int, accumulation: int, num_generations: int) -> str | None:
    """None if a step's answers split into whole prompt groups on every rank, else what to change.

    TRL's rule (GRPOConfig): the generation batch, per_device_train_batch_size x processes x steps_per_generation
    (= gradient_accumulation_steps), is divisible by num_generations. SEM's, on top: each rank's share of it,
    batch x accumulation, is too: TRL hands each rank consecutive answers, so a share that is not a multiple of the
    group puts copies of one prompt on two ranks (their engines, seeded apart, then sample them; their prefix is
    cached twice)."""
    answers = micro_batch * world_size * accumulation
    if answers % num_generations:
        return (f"batch-size {micro_batch} x {world_size} processes x {accumulation} micro-batches = {answers} "
                f"answers a step, not a multiple of num-generations {num_generations}")  # fmt: skip
    share = micro_batch * accumulation
    if share % num_generations:
        return (f"batch-size {micro_batch} x {accumulation} micro-batches = {share} answers per process splits the "
                f"groups of {num_generations} across processes: make batch-size x gradient_accumulation_steps a "
                f"multiple of {num_generations}")  # fmt: skip
    return None
