"""The trainer end to end on the real small model and the shipped benchmark sample: data, the rollout's mask and TRL's
loss under it, SFT and GRPO that save and resume, evaluation with its table and plot, export. Sized for CI (a few
steps, short completions)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from safetensors.torch import load_file
from typer.testing import CliRunner

from sem import protocol
from sem.gate import read_threshold, resolve_policy, write_threshold
from tests.conftest import free_port, invoke_trainer, launch, stop
from trainer.cli import app
from trainer.data import check_disjoint, read_jsonl
from trainer.train.rollout import RolloutConfig, SEMRollout

runner = CliRunner()
invoke = invoke_trainer


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory, settings) -> Path:
    root = tmp_path_factory.mktemp("trainer")
    out = invoke("data", "--out", str(root / "data"), "--per-class", "4", "--dev-per-class", "2")  # the sample
    assert "train 8 {'known': 4, 'needs_search': 4}" in out and "test 4 {'known': 2, 'needs_search': 2}" in out
    return root


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory, settings) -> tuple[Path, Path]:
    """The base model's own labels of a small pool (k = 2): what SFT teaches and the gate is judged against. The
    model is the base, its files linked, so a calibration can be written beside them."""
    from sem.assets import base_model_dir

    root = tmp_path_factory.mktemp("labelled")
    model = root / "model"
    model.mkdir()
    for f in base_model_dir(settings.home_dir).iterdir():
        (model / f.name).symlink_to(f)
    invoke("label", "--per-set", "3", "--k", "2", "--max-tokens", "24", "--model", str(model), "--engine", "vllm",
           "--out", str(root / "labels"))  # fmt: skip
    return model, root / "labels"


def test_data_is_balanced_and_has_its_corpus(workdir: Path) -> None:
    train = read_jsonl(workdir / "data" / "train.jsonl")
    dev = read_jsonl(workdir / "data" / "dev.jsonl")
    test = read_jsonl(workdir / "data" / "test.jsonl")
    assert len(train) == 8 and len(dev) == 4 and len(test) == 4
    check_disjoint(train=train, dev=dev, test=test)  # by normalised question text, not ids
    corpus = [json.loads(line) for line in (workdir / "data" / "corpus.jsonl").open()]
    needed = {p.text for e in train if e.kind == "needs_search" for p in e.paragraphs if p.supporting}
    assert needed <= {row["text"] for row in corpus}


def fake_trainer(model, tokenizer, max_completion_length: int = 48) -> SimpleNamespace:
    """What the rollout reads of TRL's trainer."""
    return SimpleNamespace(
        model=model,
        processing_class=tokenizer,
        accelerator=SimpleNamespace(unwrap_model=lambda m: m),
        args=SimpleNamespace(max_completion_length=max_completion_length, temperature=1.0, top_p=1.0),
        state=SimpleNamespace(global_step=0),
    )


def assert_masks_cover_the_inserted_spans(out: dict, tokenizer, question: str) -> None:
    for ids, mask, logprobs in zip(out["completion_ids"], out["env_mask"], out["logprobs"], strict=True):
        assert len(ids) == len(mask) == len(logprobs)
        inserted = tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if m == 0])
        generated = tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if m == 1])
        assert inserted.startswith(f"<search> {question} </search>\n<result>")
        assert protocol.RESULT_CLOSE in inserted and protocol.RESULT_OPEN not in generated
        assert ids[-1] == tokenizer.eos_token_id
    assert set(out["search_count"]) == {1}


def test_rollout_mask_equals_the_inserted_spans(workdir: Path, settings) -> None:
    """HF rollouts (the vLLM ones are checked in the weight-push test below)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sem.loop import SearchPolicy
    from trainer.runtime import retriever as _retriever

    tokenizer = AutoTokenizer.from_pretrained(settings.model_path)
    model = AutoModelForCausalLM.from_pretrained(settings.model_path, dtype=torch.float32)
    model.train()
    config = RolloutConfig(policy=SearchPolicy.always, engine="hf")
    rollout = SEMRollout(_retriever(workdir / "data" / "corpus.jsonl"), config)
    out = rollout(["Who wrote Hamlet?"] * 2, fake_trainer(model, tokenizer))
    assert {"prompt_ids", "completion_ids", "logprobs", "env_mask"} <= out.keys()
    assert_masks_cover_the_inserted_spans(out, tokenizer, "Who wrote Hamlet?")
    assert model.training  # generation ran in eval mode, training mode is restored


def policy_logprobs(model, prompt_ids: list[int], completion_ids: list[int]):
    """The policy's own log-prob of each completion token (temperature 1), as TRL's loss computes it."""
    import torch

    ids = torch.tensor([prompt_ids + completion_ids])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt_ids) - 1 : -1]
    return torch.log_softmax(logits.float(), -1).gather(1, torch.tensor(completion_ids)[:, None])[:, 0]


@pytest.fixture(scope="module")
def rollout_server(settings) -> Iterator[str]:
    """`vllm serve` set up for rollouts (deploy/README.md): the weight loader, processed log-probs, dev mode."""
    port = free_port()
    vllm_home = settings.home_dir / "vllm"
    env = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CACHE_ROOT": str(vllm_home / "cache"), "VLLM_SERVER_DEV_MODE": "1",
           "VLLM_RPC_BASE_PATH": str(vllm_home / "ipc"), "VLLM_NO_USAGE_STATS": "1"}  # fmt: skip
    args = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", settings.model_path,
            "--dtype", "float32", "--enforce-eager", "--max-model-len", "2048", "--port", str(port),
            "--host", "127.0.0.1", "--enable-prefix-caching", "--logprobs-mode", "processed_logprobs",
            "--worker-extension-cls", "sem.engines.vllm.WeightLoader"]  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    proc = launch(args, env, "vllm-rollout-server.log", f"{base}/v1/models")
    yield base
    stop(proc)


@pytest.mark.parametrize("where", ["in-process", "server"])
def test_a_new_step_pushes_the_policy_weights_into_vllm(
    workdir: Path, settings, where: str, request: pytest.FixtureRequest
) -> None:
    """vLLM rollouts (in-process, and on a `vllm serve`): the masks cover exactly the inserted tokens; after the LoRA
    policy changes and the step moves on, vLLM samples from the new weights: its log-probs equal the policy's (to
    float error), while the policy's log-probs of the same tokens before the change do not."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sem.loop import SearchPolicy
    from trainer.runtime import retriever as _retriever
    from trainer.train.lora import lora_config

    tokenizer = AutoTokenizer.from_pretrained(settings.model_path)
    base = AutoModelForCausalLM.from_pretrained(settings.model_path, dtype=torch.float32)
    model = get_peft_model(base, lora_config(8))
    trainer = fake_trainer(model, tokenizer, max_completion_length=24)
    server = request.getfixturevalue("rollout_server") if where == "server" else None
    config = RolloutConfig(policy=SearchPolicy.always, engine="vllm", vllm_server_url=server)
    rollout = SEMRollout(_retriever(workdir / "data" / "corpus.jsonl"), config)
    question = "What is the capital of France?"
    try:
        first = rollout([question] * 2, trainer)
        with torch.no_grad():  # an optimizer step, large: LoRA's B starts at zero
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.add_(torch.randn_like(param) * 0.2)
        before = {n: p.clone() for n, p in model.named_parameters() if "base_layer" in n}
        trainer.state.global_step = 1
        out = rollout([question], trainer)
    finally:
        rollout.close()
    assert_masks_cover_the_inserted_spans(first, tokenizer, question)
    prompt, completion = out["prompt_ids"][0], out["completion_ids"][0]
    generated = [i for i, m in enumerate(out["env_mask"][0]) if m == 1]
    sampled = torch.tensor(out["logprobs"][0])[generated]
    now = policy_logprobs(model, prompt, completion)[generated]
    mismatch = (sampled - now).abs().mean()
    assert mismatch < 1e-3  # vLLM holds the new weights
    with model.disable_adapter():  # the weights vLLM started from
        old = policy_logprobs(model, prompt, completion)[generated]
    assert (sampled - old).abs().mean() > max(0.05, 50 * mismatch)  # so the check above can fail
    # the push merged LoRA into the base weights for the copy and took it out again
    assert all(torch.allclose(p, before[n], atol=1e-6) for n, p in model.named_parameters() if "base_layer" in n)
    assert rollout.stats.syncs == 2


def test_trl_loss_ignores_tokens_the_env_mask_zeroes(tmp_path: Path, settings) -> None:
    """TRL's GRPO loss under our env_mask: changing inserted (mask 0) tokens leaves the loss and its gradient as they
    were; the same change under an all-ones mask moves the gradient (so the check can fail)."""
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from trainer.train.lora import lora_config

    tokenizer = AutoTokenizer.from_pretrained(settings.model_path)
    args = GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=2, num_generations=2,
                      max_completion_length=64, loss_type="dapo", report_to=[], use_cpu=True, bf16=False)  # fmt: skip
    trainer = GRPOTrainer(model=settings.model_path, reward_funcs=[lambda completions, **_: [0.0] * len(completions)],
                          args=args, train_dataset=Dataset.from_list([{"prompt": "q"}] * 2), processing_class=tokenizer,
                          peft_config=lora_config(4))  # fmt: skip
    trainer.current_gradient_accumulation_steps = 1
    model = trainer.model
    model.train()

    def encode(text: str) -> list[int]:
        return tokenizer.encode(text, add_special_tokens=False)

    prompt = encode("What is the capital of France?")
    generated = encode("<think>Not sure.</think>\n<answer>Lyon</answer>\n<search> capital of France </search>")
    inserted = encode("\n<result>\n[1] Paris\nParis is the capital and largest city of France.\n</result>")

    def loss_and_grad(inserted_ids: list[int], tool_mask: list[int]) -> tuple[float, torch.Tensor]:
        completion = torch.tensor([generated + inserted_ids] * 2)
        inputs = {
            "prompt_ids": torch.tensor([prompt] * 2), "prompt_mask": torch.ones(2, len(prompt), dtype=torch.long),
            "completion_ids": completion, "completion_mask": torch.ones_like(completion),
            "tool_mask": torch.tensor([tool_mask] * 2), "advantages": torch.tensor([1.0, -0.5]),
            "num_items_in_batch": torch.tensor(float(2 * sum(tool_mask))),
        }  # fmt: skip
        model.zero_grad()
        loss = trainer._compute_loss(model, inputs)
        loss.backward()
        grads = [p.grad.flatten() for p in model.parameters() if p.requires_grad and p.grad is not None]
        return loss.item(), torch.cat(grads)

    changed = inserted[::-1]  # other tokens where the result was: other log-probs there
    env_mask = [1] * len(generated) + [0] * len(inserted)
    loss_a, grad_a = loss_and_grad(inserted, env_mask)
    loss_b, grad_b = loss_and_grad(changed, env_mask)
    assert grad_a.abs().sum() > 0
    assert loss_a == pytest.approx(loss_b, abs=1e-6) and torch.allclose(grad_a, grad_b, atol=1e-7)
    _, grad_c = loss_and_grad(inserted, [1] * len(env_mask))
    _, grad_d = loss_and_grad(changed, [1] * len(env_mask))
    assert not torch.allclose(grad_c, grad_d, atol=1e-5)  # unmasked, the same change does move the gradient


def test_sft_then_grpo_save_resume_eval_export(workdir: Path, labelled: tuple[Path, Path]) -> None:
    data = str(workdir / "data")
    sft_out = workdir / "sft"
    labels = str(labelled[1] / "labels.jsonl")  # SFT teaches the model's own labelled attempts, nothing canned
    invoke("sft", "--labels", labels, "--out", str(sft_out), "--max-steps", "2", "--batch-size", "2",
           "--save-steps", "1")  # fmt: skip
    assert (sft_out / "final" / "adapter_config.json").is_file() and (sft_out / "checkpoint-2").is_dir()
    sft_adapter = load_file(sft_out / "final" / "adapter_model.safetensors")

    grpo_out = workdir / "grpo"
    common = ["--data", data, "--model", str(sft_out / "final"), "--out", str(grpo_out), "--batch-size", "2",
              "--num-generations", "2", "--max-completion-length", "32", "--save-steps", "1",
              "--rollout-engine", "vllm"]  # fmt: skip
    invoke("train", *common, "--max-steps", "1")
    assert (grpo_out / "checkpoint-1").is_dir()
    invoke("train", *common, "--max-steps", "2", "--resume")  # picks up at step 1, runs step 2 only
    assert (grpo_out / "checkpoint-2").is_dir() and (grpo_out / "final" / "adapter_config.json").is_file()
    logs = [json.loads(line) for line in (grpo_out / "log.jsonl").open()]
    steps = [r["step"] for r in logs if "rewards/sem/mean" in r]
    assert steps == [1, 2]  # step 1 was not trained twice
    assert all("rewards/searches/mean" in r for r in logs if "rewards/sem/mean" in r)
    # vLLM's log-probs against the policy's, after the weights were pushed (at the start, and from the checkpoint on
    # resume): TRL's importance-sampling correction logs the mismatch
    diffs = [r["sampling/sampling_logp_difference/mean"] for r in logs if "rewards/sem/mean" in r]
    assert len(diffs) == 2 and all(0 <= d < 0.05 for d in diffs), diffs
    assert all(r["rollout"]["syncs"] == 1 for r in logs if "rewards/sem/mean" in r)  # one push per run of one step
    grpo_adapter = load_file(grpo_out / "final" / "adapter_model.safetensors")
    assert grpo_adapter.keys() == sft_adapter.keys()  # GRPO kept training the SFT adapter: one adapter in the end

    eval_out = workdir / "eval"
    dev = str(workdir / "data" / "dev.jsonl")
    table = invoke("eval", "--data", dev, "--model", str(sft_out / "final"), "--engine", "hf", "--max-tokens", "24",
                   "--out", str(eval_out), "--policies", "never,always")  # fmt: skip
    assert "| all | always | 4 |" in table and "| all | never | 4 |" in table
    summary = json.loads((eval_out / "results.json").read_text())["summary"]
    always = next(r for r in summary if r["policy"] == "always" and r["source"] == "all")
    never = next(r for r in summary if r["policy"] == "never" and r["source"] == "all")
    assert always["searches_per_question"] == 1.0 and never["searches_per_question"] == 0.0
    assert (eval_out / "results.png").stat().st_size > 10_000

    # `trainer calibrate --model <adapter>` keeps the threshold in the adapter; the merge and publish carry it
    write_threshold(grpo_out / "final", 0.25, policy="confidence", split="dev")
    merged = workdir / "merged"
    invoke("export", "--adapter", str(grpo_out / "final"), "--out", str(merged))
    assert (merged / "model.safetensors").is_file() and not (merged / "adapter_config.json").exists()
    assert read_threshold(merged) == 0.25 and resolve_policy(None, merged) == "confidence"

    published = workdir / "published"
    invoke("publish", "--adapter", str(grpo_out / "final"), "--out", str(published))
    assert read_threshold(published) == 0.25  # no --gate: the adapter's own
    weights = load_file(published / "adapter_model.safetensors")
    assert {str(w.dtype) for w in weights.values()} == {"torch.bfloat16"}
    config = json.loads((published / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"  # no path of this machine


def test_a_stopped_training_run_takes_its_vllm_engine_with_it(workdir: Path, tmp_path: Path) -> None:
    """SIGTERM (`kill`, a scheduler) unwinds the trainer: the rollout's vLLM engine processes end with it."""
    import signal
    import subprocess

    import psutil

    args = [sys.executable, "-c", "from trainer.cli import app; app()", "train", "--data", str(workdir / "data"),
            "--out", str(tmp_path / "grpo"), "--max-steps", "50", "--batch-size", "2", "--num-generations", "2",
            "--max-completion-length", "32", "--rollout-engine", "vllm"]  # fmt: skip
    log = (tmp_path / "train.log").open("w+")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 600
        while "vLLM rollout engine ready" not in (tmp_path / "train.log").read_text():
            assert proc.poll() is None, (tmp_path / "train.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the rollout engine did not start in 10 min"
            time.sleep(1)
        engine = psutil.Process(proc.pid).children(recursive=True)
        assert engine, "the vLLM engine runs in processes of its own"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=180) == 128 + signal.SIGTERM
        _, alive = psutil.wait_procs(engine, timeout=60)
        assert not alive, [p.name() for p in alive]
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()


def test_bad_policy_is_a_clear_error(workdir: Path) -> None:
    result = runner.invoke(app, ["eval", "--data", str(workdir / "data" / "dev.jsonl"), "--policies", "sometimes"])
    assert result.exit_code != 0 and "sometimes" in result.output


def test_label_calibrate_and_judge_a_gate_with_the_real_model(tmp_path: Path, labelled: tuple[Path, Path]) -> None:
    """`trainer label` samples the model's own answers and classes follow from them; `calibrate` stores a threshold
    beside the model; `eval-gate` reads it and reports the gate beside never, always and the oracle."""
    from sem.gate import read_threshold
    from trainer.evals.labels import classify, is_right, read_labels

    model, labels_dir = labelled
    labels = read_labels(labels_dir / "labels.jsonl")
    assert {lab.example.source for lab in labels} == {"nq_open", "hotpotqa", "musique", "2wiki", "mmlu", "gsm8k"}
    for lab in labels:
        assert len(lab.closed) == len(lab.searched) == 2 and all(isinstance(a, str) for a in lab.closed + lab.searched)
        assert lab.p_closed == sum(is_right(a, lab.example) for a in lab.closed) / 2
        assert lab.klass == classify(lab.p_closed, lab.p_search)
    assert (labels_dir / "classes.json").is_file()

    result = runner.invoke(app, ["calibrate", "--labels", str(labels_dir / "labels.jsonl"), "--split", "test"])
    assert result.exit_code != 0 and "frozen" in result.output  # never chosen on the test split
    out = invoke("calibrate", "--labels", str(labels_dir / "labels.jsonl"), "--split", "train", "--model", str(model),
                 "--engine", "vllm", "--max-tokens", "24")  # fmt: skip
    threshold = read_threshold(model)
    assert threshold is not None and f"'threshold': {threshold}" in out

    gate_dir = tmp_path / "gate"
    report = invoke("eval-gate", "--labels", str(labels_dir / "labels.jsonl"), "--split", "train", "--model",
                    str(model), "--engine", "vllm", "--policies", "never,always,confidence", "--max-tokens", "24",
                    "--out", str(gate_dir))  # fmt: skip
    assert f"confidence threshold {threshold}" in report
    rows = {r["policy"]: r for r in json.loads((gate_dir / "gate.json").read_text())["rows"]}
    assert set(rows) == {"never", "always", "confidence", "oracle"}
    assert rows["never"]["searches_per_question"] == 0.0 and rows["always"]["searches_per_question"] == 1.0
    gate = rows["confidence"]  # a gate with a score (1 - confidence) over every answer; an unscored one counts as
    assert gate["questions"] > 0 and gate["scored"] > 0  # what it did: scored and unscored make up all the questions
    assert gate["scored"] + gate["unscored"] == gate["questions"]
    assert "auroc" in gate and (gate["auroc"] is None or 0.0 <= gate["auroc"] <= 1.0)
    assert all("auroc" not in rows[p] for p in ("never", "always", "oracle"))  # they have no score to rank by
    assert (gate_dir / "gate.png").stat().st_size > 10_000
    lettered = [lab for lab in read_labels(labels_dir / "labels.jsonl", "train") if lab.example.choices]
    options = json.loads((gate_dir / "gate.json").read_text())["option_likelihood"]
    if lettered:  # every multiple-choice question scored by likelihood, both ways, a letter each
        for way in ("letter", "text"):
            assert sum(options[way]["predicted"].values()) == len(lettered) and set(options[way]["predicted"]) <= set(
                "ABCD"
            )
    else:
        assert options is None
