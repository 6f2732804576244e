"""The playground in a real headless browser (Debian's chromium + chromedriver, driven by Selenium) against the real
service: ask with the keyboard, watch the streamed answer and its trace, compare policies, read bad-input errors."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import ARTIFACTS

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
if not (CHROMIUM and CHROMEDRIVER):  # a failure that says what to install, never a skip
    pytest.fail("needs Debian's chromium and chromium-driver: run `make browser` (make test does)", pytrace=False)
TIMEOUT_S = 120


def start_chromium():  # type: ignore[no-untyped-def]
    """Headless Chromium under Selenium (also used by test_budget_service.py)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


@pytest.fixture(scope="module")
def browser() -> Iterator:
    driver = start_chromium()
    yield driver
    driver.quit()


@pytest.fixture
def page(browser, service: str):
    from selenium.webdriver.support.ui import WebDriverWait

    browser.set_window_size(1280, 1100)
    browser.get(service + "/")
    WebDriverWait(browser, 30).until(lambda d: d.find_element("id", "model").text.startswith("Model: "))
    return browser


def wait_done(driver, n: int = 1) -> list:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, TIMEOUT_S).until(
        lambda d: len(d.find_elements("css selector", ".run.done, .run.failed")) >= n
    )
    return driver.find_elements("css selector", ".run")


def ask_with_keyboard(driver, question: str, policy: str) -> None:
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element("id", "policy")).select_by_value(policy)
    box = driver.find_element("id", "question")
    box.clear()
    box.send_keys(question)
    box.send_keys(Keys.CONTROL, Keys.ENTER)


def test_served_at_the_root(service: str) -> None:
    page = httpx.get(service + "/")
    assert page.status_code == 200 and "SEM playground" in page.text
    assert httpx.get(service + "/static/playground.js").status_code == 200
    # no external scripts, styles or fonts: the machines it runs on may have no network
    assert 'src="http' not in page.text and 'href="http' not in page.text


def test_ask_streams_the_answer_and_the_search_trace(page) -> None:
    ask_with_keyboard(page, "Who painted the Mona Lisa?", "always")
    (card,) = wait_done(page)
    assert "done" in card.get_attribute("class"), card.text
    assert card.find_element("css selector", ".answer").text.strip()
    searches = card.find_elements("css selector", ".trace li.search")
    assert len(searches) == 1 and "Mona Lisa" in searches[0].find_element("css selector", ".query").text
    details = searches[0].find_element("css selector", "details")
    if not details.get_attribute("open"):  # the page opens a search whose passage the answer cites
        details.find_element("css selector", "summary").click()
    passages = details.find_elements("css selector", ".passage")
    assert passages and all(p.is_displayed() and p.text for p in passages)
    assert card.find_elements("css selector", ".trace li.thinking")  # the model's own words, streamed
    assert card.get_attribute("data-searches") == "1" and "1 search" in card.find_element("css selector", ".meta").text
    ARTIFACTS.mkdir(exist_ok=True)
    page.save_screenshot(str(ARTIFACTS / "playground.png"))


def test_a_client_side_search_round(page) -> None:
    """ "I search": the model's search comes to the page as a tool call, the result typed in goes back to it."""
    from selenium.webdriver.support.ui import WebDriverWait

    page.find_element("id", "client-search").click()
    ask_with_keyboard(page, "What is the capital of Zubrowka?", "always")
    WebDriverWait(page, TIMEOUT_S).until(lambda d: d.find_elements("css selector", ".trace li.client-search"))
    (card,) = page.find_elements("css selector", ".run")
    asked = card.find_element("css selector", "li.client-search")
    assert "Zubrowka" in asked.find_element("css selector", ".query").text
    assert "waiting for your search" in card.find_element("css selector", ".status").text
    asked.find_element("css selector", "textarea").send_keys("The capital of Zubrowka is Lutz, founded in 1802.")
    asked.find_element("css selector", "button").click()
    (card,) = wait_done(page)
    assert "Lutz" in card.find_element("css selector", ".answer").text, card.text
    (search,) = card.find_elements("css selector", ".trace li.search")
    assert "run by you" in search.find_element("css selector", ".label").text.lower()  # CSS upper-cases labels
    assert card.get_attribute("data-searches") == "1"
    # the answer's source is listed under it, and the cited passage is highlighted with the answer's words marked
    assert len(card.find_elements("css selector", ".citations li")) == 1
    cited = card.find_element("css selector", ".passage.cited")
    assert cited.find_element("css selector", "mark").text in card.find_element("css selector", ".answer").text
    page.save_screenshot(str(ARTIFACTS / "playground-citations.png"))


def test_side_by_side_shows_each_policy(page) -> None:
    page.find_element("id", "question").send_keys("What is the capital of Australia?")
    page.find_element("id", "compare-button").click()
    cards = wait_done(page, 3)
    by_policy = {c.get_attribute("data-policy"): c for c in cards}
    assert set(by_policy) == {"auto", "always", "never"}
    assert all("done" in c.get_attribute("class") for c in cards), [c.text for c in cards]
    assert int(by_policy["always"].get_attribute("data-searches")) >= 1
    assert by_policy["never"].get_attribute("data-searches") == "0"
    assert not by_policy["never"].find_elements("css selector", ".trace li.search")
    page.execute_script("refreshStats()")
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(page, 10).until(lambda d: d.find_element("id", "stat-answers").text not in ("-", "0"))
    page.save_screenshot(str(ARTIFACTS / "playground-side-by-side.png"))


def test_bad_input_shows_a_readable_message(page) -> None:
    page.find_element("id", "ask-button").click()  # empty question
    error = page.find_element("id", "error")
    assert error.is_displayed() and "Type a question" in error.text
    assert not page.find_elements("css selector", ".run")

    page.find_element("id", "question").send_keys("Who wrote Hamlet?")
    budget = page.find_element("id", "max-searches")
    budget.clear()
    budget.send_keys("50")  # over the service's cap: the service's own 4xx message must reach the page
    page.find_element("id", "ask-button").click()
    (card,) = wait_done(page)
    assert "failed" in card.get_attribute("class")
    assert "max_searches" in error.text and error.is_displayed()


def test_phone_width_has_no_sideways_scroll(page) -> None:
    page.set_window_size(390, 844)
    width = page.execute_script("return document.documentElement.scrollWidth")
    viewport = page.execute_script("return window.innerWidth")
    assert width <= viewport, f"page is {width}px wide in a {viewport}px window"


def test_a_search_rate_is_sent_and_the_rate_achieved_shown(page) -> None:
    """The dial from the playground: a rate with the `confidence` policy is a dialled answer (the counters show the
    share of those that searched); with `auto` the rate is not sent (it would be a 422)."""
    from selenium.webdriver.support.ui import WebDriverWait

    page.find_element("id", "search-rate").send_keys("0.5")
    ask_with_keyboard(page, "What is the capital of Australia?", "auto")
    (card,) = wait_done(page)
    assert "done" in card.get_attribute("class"), card.text  # not sent with auto: no 422
    ask_with_keyboard(page, "What is the capital of Australia?", "confidence")  # a new ask clears the last card
    finished = "css selector", ".run[data-policy='confidence'].done, .run[data-policy='confidence'].failed"
    WebDriverWait(page, TIMEOUT_S).until(lambda d: d.find_elements(*finished))
    (card,) = page.find_elements(*finished)
    assert "done" in card.get_attribute("class"), card.text
    page.execute_script("refreshStats()")
    WebDriverWait(page, 10).until(lambda d: d.find_element("id", "stat-rate").text.endswith("%"))
