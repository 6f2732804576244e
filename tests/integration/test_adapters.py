"""Several models from one engine (issue #42): `sem-serve` on the embedded base with SEM's adapter and the world's
adapter served by name through vLLM's multi-LoRA, as `make serve` runs it; each with its gate and its corpus."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sem.assets import TUNED_ADAPTER
from tests.conftest import free_port, launch, stop

WORLD = Path(__file__).resolve().parents[2] / "sem" / "adapters" / "sem-world-135m"
DEFAULT, BASE, WORLD_NAME = "SmolLM2-135M-Instruct-SEM", "SmolLM2-135M-Instruct", "sem-world-135m"
# A taught fact of the world (its dev split: no recipe was chosen on it) and a fact only its corpus holds
TAUGHT = ("In which year was Meque Zafor born?", "1902")
IN_CORPUS = ("In which year was Mounam Shafo born?", "1943")


@pytest.fixture(scope="module")
def served(settings) -> Iterator[str]:
    port = free_port()
    env = {"SEM_PORT": str(port), "SEM_HOME": str(settings.home_dir), "SEM_MODEL": "base",
           "SEM_ADAPTERS": f"{DEFAULT}={TUNED_ADAPTER},{WORLD_NAME}={WORLD}", "SEM_DEFAULT_MODEL": DEFAULT}  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    proc = launch([sys.executable, "-m", "service"], env, "service-adapters.log", f"{base}/readyz")
    yield base
    stop(proc)


def ask(client: httpx.Client, question: str, **options: object) -> dict:
    r = client.post("/v1/answer", json={"question": question, "max_tokens": 24, **options})
    assert r.status_code == 200, r.text
    return r.json()


def test_models_are_listed_with_their_own_gates(served: str) -> None:
    cards = httpx.get(f"{served}/v1/models").json()["data"]
    assert [c["id"] for c in cards] == [DEFAULT, BASE, WORLD_NAME]  # the default first
    by = {c["id"]: c for c in cards}
    assert by[WORLD_NAME]["parent"] == BASE and by[BASE]["parent"] is None
    world_gate = json.loads((WORLD / "sem_gate.json").read_text())
    assert by[WORLD_NAME]["confidence_threshold"] == world_gate["confidence_threshold"]
    assert by[WORLD_NAME]["default_search"] == world_gate["policy"] == "confidence"
    assert by[BASE]["default_search"] == "confidence" and by[BASE]["confidence_threshold"] == 0.0  # the base's gate


def test_the_world_adapter_knows_what_the_base_does_not(served: str) -> None:
    question, year = TAUGHT
    with httpx.Client(base_url=served, timeout=120) as client:
        world = ask(client, question, model=WORLD_NAME, search="never")
        base = ask(client, question, model=BASE, search="never")
        default = ask(client, question, search="never")
    assert world["answer"] == year and world["model"] == WORLD_NAME
    assert base["answer"] != year and base["model"] == BASE
    assert default["model"] == DEFAULT


def test_the_world_model_searches_its_own_corpus(served: str) -> None:
    question, year = IN_CORPUS
    with httpx.Client(base_url=served, timeout=120) as client:
        world = ask(client, question, model=WORLD_NAME, search="always")
        default = ask(client, question, search="always")
    assert world["searches"][0]["passages"][0]["id"].startswith("world:")
    assert world["answer"] == year
    assert not any(p["id"].startswith("world:") for p in default["searches"][0]["passages"])  # the Wikipedia corpus


def test_chat_completions_pick_a_model_and_an_unknown_one_is_a_404(served: str) -> None:
    with httpx.Client(base_url=served, timeout=120) as client:
        message = [{"role": "user", "content": TAUGHT[0]}]
        r = client.post(
            "/v1/chat/completions", json={"model": WORLD_NAME, "messages": message, "sem": {"search": "never"}}
        )
        assert r.status_code == 200, r.text
        assert r.json()["model"] == WORLD_NAME and r.json()["choices"][0]["message"]["content"] == TAUGHT[1]
        for path, body in (("/v1/chat/completions", {"model": "gpt-4o", "messages": message}),
                           ("/v1/answer", {"model": "gpt-4o", "question": "q"})):  # fmt: skip
            r = client.post(path, json=body)
            assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
            assert WORLD_NAME in r.json()["error"]["message"] and DEFAULT in r.json()["error"]["message"]


def test_the_sdk_names_a_model(served: str) -> None:
    from sem_client import SemClient

    with SemClient(served) as sem:
        assert {m.id for m in sem.models()} == {DEFAULT, BASE, WORLD_NAME}
        assert sem.answer(TAUGHT[0], model=WORLD_NAME, search="never").answer == TAUGHT[1]


def test_the_playground_shows_the_world_model_deciding(served: str) -> None:
    """In a real browser: pick the world's model, ask a taught fact and one only its corpus holds under `confidence`;
    each card says the first answer, its confidence against the threshold, and whether it searched."""
    from selenium.webdriver.support.ui import Select, WebDriverWait

    from tests.conftest import ARTIFACTS
    from tests.integration.test_playground import ask_with_keyboard, start_chromium, wait_done

    browser = start_chromium()
    try:
        browser.set_window_size(1280, 1200)
        browser.get(served + "/")
        WebDriverWait(browser, 60).until(lambda d: len(d.find_elements("css selector", "#model-select option")) == 3)
        Select(browser.find_element("id", "model-select")).select_by_value(WORLD_NAME)
        # the world's own examples replace the deployment's
        WebDriverWait(browser, 30).until(
            lambda d: any("Kraihex" in b.text for b in d.find_elements("css selector", ".example"))
        )
        decisions = []
        for question, answer in (TAUGHT, IN_CORPUS):  # each ask replaces the page's cards
            ask_with_keyboard(browser, question, "confidence")
            (card,) = wait_done(browser)
            assert answer in card.find_element("css selector", ".answer").text, card.text
            decisions.append(card.find_element("css selector", ".decision").text)
        assert "answered without search" in decisions[0] and decisions[1].endswith("→ searched"), decisions
        ARTIFACTS.mkdir(exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "playground-world.png"))
    finally:
        browser.quit()
