"""SEM's tuned default model: the shipped LoRA adapter merges into the base, the service serves the result by
default, and it behaves as `make eval-model` measured on the dev mix: a search for a multi-hop question, none for an
MMLU one. (That split follows the question's form, not what the model knows: it answers "C" to all 50 MMLU questions
of the dev mix. Issue #18 replaces this gate; these tests pin today's behaviour, not its quality.)"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import torch
from safetensors.torch import load_file

from sem.assets import MARKER, TUNED_ADAPTER, base_model_dir, has_tuned_adapter, prepare_tuned_model, tuned_model_dir

ROOT = Path(__file__).resolve().parents[2]
# From results/sem-smollm2/tuned/results.json (`make eval-model`): under `auto` the tuned model searched on these
# multi-hop questions ...
NEEDS_SEARCH = [
    "Wilm Hosenfeld assisted the pianist and composer of what nationality survive during 1944?",
    "Where is the magazine headquartered that Robert W. McElroy writes for?",
    "What publisher was formed from the owner of the The Daily News?",
]
# ... and did not search on these MMLU questions. It answered "C" to all three (the gold letters are D, B and C: one
# right), as it answers "C" to every MMLU question of the dev mix.
LETTERED = [
    "The primary impact of the Hawthorne experiments in the Western Electric Company was in showing the effect on work performance of\nA. physical factors such as temperature and lighting\nB. differing pay scales for differing levels of effort\nC. interpersonal and social factors\nD. effective training programs at the workbench\nAnswer with the letter of the correct option.",  # noqa: E501
    "The utility-maximizing rule is to choose the basket of goods that\nA. has the highest marginal utility of each good in the basket.\nB. has the lowest prices for the goods.\nC. has the highest value of marginal utility to price for each good.\nD. the marginal utility to price ratio equal for all goods in the basket subject to the income constraint.\nAnswer with the letter of the correct option.",  # noqa: E501
    "In basketball, an offensive rebound occurs when a player shoots and misses, and a player from the same team recovers the ball. For the 176 players on the roster for one season of professional men's basketball, the third quartile for the total number of offensive rebounds for one season was 143. If five players are selected at random (with replacement) from that season, what is the approximate probability that at least three of them had more than 143 rebounds that season?\nA. 0.0127\nB. 0.0879\nC. 0.1035\nD. 0.8965\nAnswer with the letter of the correct option.",  # noqa: E501
]


def test_the_adapter_ships_with_its_model_card() -> None:
    assert has_tuned_adapter()
    config = json.loads((TUNED_ADAPTER / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert (TUNED_ADAPTER / "adapter_model.safetensors").stat().st_size < 10_000_000  # a few MB
    card = (TUNED_ADAPTER / "README.md").read_text()
    for needed in ("Apache-2.0", "make eval-model", "make tuned-model", "search ratio"):
        assert needed in card


def test_the_adapter_loads_and_merges(tmp_path: Path, settings) -> None:
    base = base_model_dir(settings.home_dir)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / base.name).symlink_to(base)  # the cached base, shared read-only
    merged_dir = prepare_tuned_model(tmp_path)
    assert merged_dir == tuned_model_dir(tmp_path)
    marker = json.loads((merged_dir / MARKER).read_text())
    assert marker["adapter"] == TUNED_ADAPTER.name and len(marker["sha256"]) == 64

    before, after = load_file(base / "model.safetensors"), load_file(merged_dir / "model.safetensors")
    assert before.keys() == after.keys()
    targeted = [k for k in before if k.endswith(("q_proj.weight", "down_proj.weight"))]
    changed = [k for k in targeted if not torch.equal(before[k], after[k])]
    assert targeted and len(changed) == len(targeted)  # every adapted layer moved
    embed = "model.embed_tokens.weight"
    assert torch.equal(before[embed], after[embed])  # and nothing else did

    stamp = (merged_dir / "model.safetensors").stat().st_mtime
    prepare_tuned_model(tmp_path)  # idempotent: the marker says it is done
    assert (merged_dir / "model.safetensors").stat().st_mtime == stamp


def test_the_service_serves_the_tuned_model_by_default(client: httpx.Client, settings) -> None:
    assert settings.model is None and settings.model_path == str(tuned_model_dir(settings.home_dir))
    assert client.get("/v1/models").json()["data"][0]["root"] == settings.model_path


@pytest.mark.parametrize(
    ("questions", "should_search"), [(NEEDS_SEARCH, True), (LETTERED, False)], ids=["needs", "lettered"]
)
def test_the_tuned_default_decides_when_to_search(
    client: httpx.Client, questions: list[str], should_search: bool
) -> None:
    searched = []
    for question in questions:
        reply = client.post("/v1/answer", json={"question": question, "search": "auto", "max_searches": 1})
        assert reply.status_code == 200 and reply.json()["answer"], reply.text
        searched.append(reply.json()["search_count"] > 0)
    # greedy, but batching can flip a close call: the model's choice must hold on at least two of the three
    assert sum(s == should_search for s in searched) >= 2, searched


def test_the_trained_gate_scores_its_own_decision(settings) -> None:
    """eval-gate's AUROC for `auto` reads P(search | first answer) back from the weights: high where the tuned model
    searches (after "unknown"), low where it stops (after a letter), and near zero for the base that never searches."""
    from trainer.evals.decision import search_probabilities
    from trainer.evals.likelihood import Scorer

    unsure = "<think>I am not sure of this.</think>\n<answer>unknown</answer>"
    sure = "<think>I know this.</think>\n<answer>C</answer>"
    items = [(NEEDS_SEARCH[0], unsure), (LETTERED[0], sure)]
    tuned = search_probabilities(Scorer.load(str(tuned_model_dir(settings.home_dir))), items)
    base = search_probabilities(Scorer.load(str(base_model_dir(settings.home_dir))), items)
    assert tuned[0] > 0.5 > tuned[1], tuned
    assert max(base) < 0.05, base
