"""The rollout's rank logic: weights pushed to vLLM with a LoRA policy merged out of place (the base never edited),
each rank's engine seeded apart, pushes to a shared server from the main rank only, one log line a step, and
colocated engines refused where they would share GPU 0. Ranks come from the launcher's variables (RANK, ...)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch


@pytest.fixture
def lora_model():
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)  # fmt: skip
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.5)  # a trained adapter: B is no longer zero
    return model


def test_the_merge_is_out_of_place_and_the_base_stays_bit_identical(lora_model) -> None:
    from trainer.train.vllm_rollout import _save_merged, lora_merged

    before = {n: t.clone() for n, t in lora_model.state_dict().items()}
    for _ in range(100):  # a hundred steps' pushes
        _save_merged(lora_model, None)
    after = lora_model.state_dict()
    assert all(torch.equal(before[n], after[n]) for n in before)
    merged = lora_merged(lora_model)
    reference = copy.deepcopy(lora_model).merge_and_unload().state_dict()
    assert len(merged) == 4  # q_proj and v_proj of two layers
    for name, tensor in merged.items():
        base_name = name.removeprefix("base_model.model.").replace(".base_layer.", ".")
        assert tensor.dtype == torch.bfloat16
        assert torch.allclose(tensor.float(), reference[base_name].float(), atol=2e-2)
        assert not torch.equal(tensor, before[name])  # the adapter is in it


def test_the_pushed_file_holds_the_merged_weights_under_the_bases_names(lora_model, tmp_path) -> None:
    from safetensors.torch import load_file

    from trainer.train.vllm_rollout import _save_merged, lora_merged

    count = _save_merged(lora_model, tmp_path / "w.safetensors")
    saved = load_file(tmp_path / "w.safetensors")
    assert count == len(saved) and not any("lora_" in n or "base_layer" in n for n in saved)
    assert "lm_head.weight" not in saved  # tied: vLLM ties it itself
    for name, tensor in lora_merged(lora_model).items():
        assert torch.equal(saved[name.removeprefix("base_model.model.").replace(".base_layer.", ".")], tensor)


def test_each_rank_samples_with_its_own_seed() -> None:
    from types import SimpleNamespace

    from trainer.train.rollout import engine_seed

    ranks = [SimpleNamespace(accelerator=SimpleNamespace(process_index=i)) for i in range(4)]
    assert [engine_seed(7, r) for r in ranks] == [7, 8, 9, 10]
    assert engine_seed(7, SimpleNamespace()) == 7  # one process, no accelerator yet


@pytest.fixture
def rank_env(monkeypatch):
    """A process of a launched run: `accelerate launch` / torchrun set these before the trainer starts."""

    def set_rank(rank: int, world: int = 2) -> None:
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("LOCAL_RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", str(world))

    return set_rank


def test_ranks_read_from_the_launchers_variables(rank_env, monkeypatch) -> None:
    from trainer.train import ranks

    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert (ranks.rank(), ranks.local_rank(), ranks.world_size(), ranks.is_main()) == (0, 0, 1, True)
    rank_env(1, world=4)
    assert (ranks.rank(), ranks.local_rank(), ranks.world_size(), ranks.is_main()) == (1, 1, 4, False)


def test_one_log_line_a_step_from_the_main_rank(rank_env, tmp_path) -> None:
    from types import SimpleNamespace

    from trainer.train.grpo import JSONLLogger

    path = tmp_path / "log.jsonl"
    for step in (1, 2):
        for rank in (0, 1):  # both ranks' callbacks see every step's logs
            rank_env(rank)
            JSONLLogger(path).on_log(None, SimpleNamespace(global_step=step), None, logs={"loss": 0.5})
    lines = path.read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2]
    # under a Trainer the state says which process is the main one, whatever the variables say
    rank_env(0)
    JSONLLogger(path).on_log(None, SimpleNamespace(global_step=3, is_world_process_zero=False), None, logs={"x": 1})
    assert len(path.read_text().splitlines()) == 2


def test_push_roles() -> None:
    from trainer.train.ranks import push_role

    assert push_role(server=False, sharded=False, main=False) == "write"  # colocated: its own engine
    assert push_role(server=True, sharded=False, main=True) == "write"
    assert push_role(server=True, sharded=False, main=False) == "skip"  # ZeRO-2: nothing to take part in
    assert push_role(server=True, sharded=True, main=False) == "gather"  # ZeRO-3: the gathering is a collective


class FakeEngine:
    def __init__(self) -> None:
        self.writes: list[bool] = []

    def push_weights(self, model, *, write: bool = True) -> float:
        self.writes.append(write)
        return 0.0


def fake_trainer(main: bool, processes: int = 2):
    from types import SimpleNamespace

    accelerator = SimpleNamespace(unwrap_model=lambda m: m, is_main_process=main, num_processes=processes,
                                  wait_for_everyone=lambda: None)  # fmt: skip
    return SimpleNamespace(accelerator=accelerator, model=torch.nn.Linear(2, 2), state=SimpleNamespace(global_step=3))


@pytest.mark.parametrize(("server", "main", "writes"), [
    ("http://127.0.0.1:8100", True, [True]), ("http://127.0.0.1:8100", False, []), (None, False, [True]),
])  # fmt: skip
def test_only_the_main_rank_pushes_to_a_shared_server(server, main, writes) -> None:
    from trainer.train.rollout import RolloutConfig, SEMRollout

    rollout = SEMRollout(None, RolloutConfig(engine="vllm", vllm_server_url=server))  # type: ignore[arg-type]
    rollout._vllm = engine = FakeEngine()  # type: ignore[assignment]
    rollout.attach(fake_trainer(main))
    rollout.sync_weights()
    assert engine.writes == writes
    assert rollout.stats.syncs == 1 and rollout._synced_step == 3  # every rank knows the step is synced


def test_colocated_engines_on_several_gpus_are_refused(monkeypatch) -> None:
    from sem.errors import EngineError
    from trainer.train.ranks import colocated_placement_error
    from trainer.train.rollout import RolloutConfig, SEMRollout

    assert colocated_placement_error(1, on_gpu=True) is None  # one process: its engine has the GPU
    assert colocated_placement_error(2, on_gpu=False) is None  # CPU processes share no device
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    rollout = SEMRollout(None, RolloutConfig(engine="vllm"))  # type: ignore[arg-type]
    rollout.attach(fake_trainer(main=True, processes=8))
    with pytest.raises(EngineError, match="every rank's engine on GPU 0"):
        rollout._engine(torch.nn.Linear(2, 2))


def test_cuda_graphs_on_a_gpu_eager_on_cpus() -> None:
    from trainer.train.ranks import engine_eager

    assert engine_eager(on_gpu=True) is False and engine_eager(on_gpu=False) is True


def test_the_push_file_goes_where_it_fits(lora_model, tmp_path, monkeypatch) -> None:
    import shutil

    from sem.errors import EngineError
    from trainer.train.vllm_rollout import _save_merged, policy_bytes, scratch_dir

    count = _save_merged(lora_model, tmp_path / "w.safetensors")
    need = policy_bytes(lora_model)
    assert count > 0 and need <= (tmp_path / "w.safetensors").stat().st_size <= need + 10_000  # + the JSON header
    shm, tmp = tmp_path / "shm", tmp_path / "tmp"
    shm.mkdir()
    tmp.mkdir()
    free = {shm: 64 * 2**20, tmp: 100 * 2**30}  # a container's default /dev/shm beside a roomy temp dir
    monkeypatch.setattr(shutil, "disk_usage", lambda d: SimpleNamespace(free=free[Path(d)]))
    assert scratch_dir(2**20, [shm, tmp]) == shm
    assert scratch_dir(6 * 10**9, [shm, tmp]) == tmp  # a 3B model's push does not fit 64 MB
    free[tmp] = 2**30
    with pytest.raises(EngineError, match=r"6.00 GB weights file .* --shm-size"):
        scratch_dir(6 * 10**9, [shm, tmp])
