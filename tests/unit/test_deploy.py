"""What can be checked of `deploy/` without a container engine or a cluster: Kubernetes manifests against the API
schemas (kubernetes-validate, offline), the Dockerfiles' shape, the compose file, and that every SEM_* variable they
set is a real setting."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from sem.settings import Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def sem_variables(text: str) -> set[str]:
    return set(re.findall(r"\bSEM_[A-Z0-9_]+", text))


def is_setting(name: str) -> bool:
    """SEM_FOO -> field foo; SEM_GROUP__FIELD -> nested field."""
    path = name.removeprefix("SEM_").lower().split("__")
    model = Settings
    for part in path:
        fields = model.model_fields
        if part not in fields:
            return False
        model = fields[part].annotation  # type: ignore[assignment]
    return True


@pytest.mark.parametrize("manifest", sorted((DEPLOY / "k8s").rglob("*.yaml")), ids=lambda p: p.name)
def test_kubernetes_manifests_are_valid(manifest: Path) -> None:
    import kubernetes_validate

    docs = [doc for doc in yaml.safe_load_all(manifest.read_text()) if doc is not None]  # empty ones (a stray ---)
    assert docs, f"{manifest.name} holds no document"
    for doc in docs:
        assert isinstance(doc, dict) and doc.get("kind"), f"{manifest.name}: a document with no kind"
        if doc["kind"] == "Kustomization":  # kustomize's own file, not a Kubernetes API object
            assert doc.get("apiVersion", "").startswith("kustomize.config.k8s.io/"), doc.get("apiVersion")
            assert doc.get("resources") or doc.get("patches"), f"{manifest.name}: a Kustomization with nothing in it"
            continue
        kubernetes_validate.validate(doc, "1.33.0", strict=True)


def test_kustomize_patches_name_real_settings() -> None:
    for file in (DEPLOY / "k8s").rglob("kustomization.yaml"):
        for name in sem_variables(file.read_text()):
            assert is_setting(name), f"{file}: {name} is not a setting"


@pytest.mark.parametrize("dockerfile", sorted((DEPLOY / "docker").glob("Dockerfile.*")), ids=lambda p: p.name)
def test_dockerfiles_are_multi_stage_non_root_with_a_health_check(dockerfile: Path) -> None:
    from dockerfile_parse import DockerfileParser

    parser = DockerfileParser(fileobj=dockerfile.open("rb"))
    instructions = [i["instruction"] for i in parser.structure]
    assert instructions.count("FROM") >= 2
    users = [i["value"] for i in parser.structure if i["instruction"] == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert "HEALTHCHECK" in instructions and "sem assets" in dockerfile.read_text()
    for name in sem_variables(dockerfile.read_text()):
        assert is_setting(name), f"{dockerfile.name}: {name} is not a setting"


def test_compose_file_wires_real_services_and_settings() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert {"redis", "sem", "sem-remote", "vllm", "retrieve"} <= set(services)
    for name, service in services.items():
        for key in service.get("environment", {}):
            if key.startswith("SEM_"):
                assert is_setting(key), f"{name}: {key} is not a setting"
        for dep in service.get("depends_on", []):
            assert dep in services
    remote = services["sem-remote"]["environment"]
    assert (
        remote["SEM_ENGINE_URL"] == "http://vllm:8000" and remote["SEM_SEARCH__RETRIEVER_URL"] == "http://retrieve:8001"
    )


def dry_run(*args: str) -> str:
    from typer.testing import CliRunner

    from trainer.cli import app

    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    return result.output if result.exit_code == 0 else f"exit {result.exit_code}: {result.output}"


GPU_RECIPE = DEPLOY.parent / "trainer" / "configs" / "gpu-qwen2.5-3b.yaml"


def words(out: str) -> str:
    return " ".join(out.replace("│", " ").split())  # rich wraps an error in a box


@pytest.mark.parametrize("stage", [2, 3])
def test_gpu_training_layouts_add_up(stage: int) -> None:
    """Each accelerate config with the GPU recipe: DeepSpeed at its ZeRO stage, the step's answers split into
    whole groups of generations at the config's process count (TRL refuses anything else), the trainers and the
    vLLM server fit one node of 8 GPUs, and so does the memory plan."""
    path = DEPLOY / "train" / f"accelerate-deepspeed-zero{stage}.yaml"
    accelerate = yaml.safe_load(path.read_text())
    assert accelerate["distributed_type"] == "DEEPSPEED" and accelerate["deepspeed_config"]["zero_stage"] == stage
    # one source of gradient accumulation: the recipe's (DeepSpeed takes it when the file leaves it out)
    assert "gradient_accumulation_steps" not in accelerate["deepspeed_config"]
    processes = accelerate["num_processes"]
    out = dry_run("train", "--config", str(GPU_RECIPE), "--dry-run", "--accelerate-config", str(path))
    train = yaml.safe_load(GPU_RECIPE.read_text())["train"]
    answers = train["batch_size"] * processes
    assert f"= {answers} answers a step: {answers // train['num_generations']} prompts x" in out, out
    assert '"rollout_engine": "vllm"' in out and '"vllm_dtype": "bfloat16"' in out
    assert f"GPUs: {processes} training + 1 vLLM server of 8" in out
    assert "gradient checkpointing" in out and "fits a 80 GiB GPU" in out, out


def test_config_goes_before_or_after_the_command() -> None:
    after = dry_run("train", "--config", str(GPU_RECIPE), "--dry-run", "--world-size", "7")
    before = dry_run("--config", str(GPU_RECIPE), "train", "--dry-run", "--world-size", "7")
    assert after == before and '"max_steps": 500' in after, after


def test_a_batch_that_does_not_split_into_groups_is_refused() -> None:
    out = dry_run("train", "--dry-run", "--batch-size", "6", "--num-generations", "4", "--world-size", "3")
    assert out.startswith("exit 2") and "= 18 answers a step, not a multiple of num-generations 4" in words(out), out
    out = dry_run("train", "--dry-run", "--batch-size", "4", "--num-generations", "8", "--world-size", "8")
    assert out.startswith("exit 2") and "splits the groups of 8 across processes" in words(out), out


def test_the_dry_run_refuses_layouts_that_cannot_run_on_8_gpus() -> None:
    out = dry_run("train", "--config", str(GPU_RECIPE), "--dry-run", "--world-size", "8")
    assert out.startswith("exit 2") and "= 9 GPUs, the node has 8: run 7 training processes" in words(out), out
    out = dry_run("train", "--config", str(GPU_RECIPE), "--dry-run", "--world-size", "8", "--vllm-server-url", "")
    assert out.startswith("exit 2") and "every rank's engine on GPU 0" in words(out), out
    out = dry_run("train", "--config", str(GPU_RECIPE), "--dry-run", "--world-size", "7",
                  "--gradient-checkpointing", "false")  # fmt: skip
    assert out.startswith("exit 2") and "does not fit 80 GiB; change one of" in words(out), out
    assert "turn on gradient_checkpointing" in words(out)


def test_an_accelerate_file_that_sets_its_own_accumulation_is_refused(tmp_path: Path) -> None:
    accelerate = yaml.safe_load((DEPLOY / "train" / "accelerate-deepspeed-zero2.yaml").read_text())
    accelerate["deepspeed_config"]["gradient_accumulation_steps"] = 1
    path = tmp_path / "accelerate.yaml"
    path.write_text(yaml.safe_dump(accelerate))
    out = dry_run("train", "--config", str(GPU_RECIPE), "--dry-run", "--accelerate-config", str(path),
                  "--gradient-accumulation-steps", "2", "--batch-size", "8")  # fmt: skip
    assert out.startswith("exit 2"), out
    assert "sets gradient_accumulation_steps 1, the recipe 2: drop it from" in words(out)


def test_probes_match_the_service_semantics() -> None:
    """Readiness reads /readyz and drops a pod at the first failure (its engine is restarting); liveness reads
    /healthz and outlasts an engine restart (~30 s on CPU, bench/chaos.py) with room to spare."""
    docs = list(yaml.safe_load_all((DEPLOY / "k8s" / "base" / "sem.yaml").read_text()))
    (deployment,) = [d for d in docs if d and d["kind"] == "Deployment"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    readiness, liveness = container["readinessProbe"], container["livenessProbe"]
    assert readiness["httpGet"]["path"] == "/readyz" and readiness["failureThreshold"] == 1
    assert liveness["httpGet"]["path"] == "/healthz"
    assert liveness["periodSeconds"] * liveness["failureThreshold"] >= 60
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
