"""``llamafactory-cli webchat`` in a real browser: headless Chromium (Debian's ``chromium`` and
``chromium-driver``) drives the page against the bundled model; the page's answers must equal the API's for
the same settings and seed, the denoising must have been drawn with masks, and bad input must give a message."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from llamafactory.serve.background import Running, serve_in_background
from tests.serve.conftest import BUNDLED

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs Debian's chromium and chromium-driver")]

SETTINGS = {"steps": 12, "temperature": 0.8, "seed": 11}


@pytest.fixture(scope="module")
def page_server(engine) -> Iterator[Running]:
    with serve_in_background(engine, page=True, max_batch=16, max_queue=64, timeout=120) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    options = Options()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,900"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def open_page(browser, page_server: Running) -> None:
    browser.get(page_server.url + "/")
    WebDriverWait(browser, 30).until(lambda driver: driver.find_element(By.TAG_NAME, "body")
                                     .get_attribute("data-state") == "ready")
    for name, value in SETTINGS.items():
        field = browser.find_element(By.ID, name)
        field.clear()
        field.send_keys(str(value))


def type_into(browser, element_id: str, text: str) -> None:
    field = browser.find_element(By.ID, element_id)
    field.clear()
    if text:
        field.send_keys(text)


def finished(browser) -> str:
    """Wait for the page to finish a request; its end state ("done" or "error")."""
    body = browser.find_element(By.TAG_NAME, "body")
    WebDriverWait(browser, 120).until(lambda driver: body.get_attribute("data-state") in ("done", "error"))
    return body.get_attribute("data-state")


def answer(browser, button: str) -> str:
    """Press ``button``, wait for the answer, and return the final text the page shows."""
    browser.find_element(By.ID, button).click()
    assert finished(browser) == "done", browser.find_element(By.ID, "message").text
    return browser.find_element(By.ID, "final").get_attribute("textContent")


def replay(browser, step: int) -> tuple[int, int]:
    """Move the replay slider to ``step``; the (masked, newly fixed) positions the canvas then shows."""
    browser.execute_script("const s = document.getElementById('replay'); s.value = arguments[0];"
                           "s.dispatchEvent(new Event('input'));", step)
    return (len(browser.find_elements(By.CSS_SELECTOR, "#canvas .mask")),
            len(browser.find_elements(By.CSS_SELECTOR, "#canvas .fresh")))


def api_text(page_server: Running, path: str, body: dict) -> str:
    answer = httpx.post(page_server.url + path, json={**SETTINGS, "strategy": "random", **body}, timeout=120)
    assert answer.status_code == 200, answer.text
    choice = answer.json()["choices"][0]
    return choice["text"] if "text" in choice else choice["message"]["content"]


def check_denoising_was_drawn(browser) -> list[dict]:
    frames = browser.execute_script("return view.frames")
    assert len(frames) >= 2
    assert None in frames[0]["tokens"], "the first step drawn should still show masks"
    assert [frame["step"] for frame in frames] == list(range(1, len(frames) + 1))
    masked, _ = replay(browser, 0)
    assert masked > 0
    fixing = next(k for k, frame in enumerate(frames) if frame["tokens"].count(None) < masked)
    assert replay(browser, fixing)[1] == masked - frames[fixing]["tokens"].count(None)
    later_masked, _ = replay(browser, len(frames) - 1)
    assert later_masked < masked
    return frames


def test_chat_in_the_page_equals_the_api(browser, page_server, tmp_path: Path) -> None:
    open_page(browser, page_server)
    type_into(browser, "max_tokens", "24")
    type_into(browser, "prompt", "ROMEO: What light")
    shown = answer(browser, "send")
    frames = check_denoising_was_drawn(browser)
    assert len(frames[0]["tokens"]) == 24
    replay(browser, len(frames) // 2)
    browser.save_screenshot(str(tmp_path / "webchat.png"))
    assert (tmp_path / "webchat.png").stat().st_size > 0
    expected = api_text(page_server, "/v1/chat/completions",
                        {"messages": [{"role": "user", "content": "ROMEO: What light"}], "max_tokens": 24})
    assert shown == expected
    assert "ROMEO: What light" in browser.find_element(By.ID, "history").text


def test_infilling_in_the_page_equals_the_api(browser, page_server, tmp_path: Path) -> None:
    open_page(browser, page_server)
    browser.find_element(By.ID, "tab-infill").click()
    type_into(browser, "prefix", "First Citizen: Before we proceed")
    type_into(browser, "gap", "10")
    type_into(browser, "suffix", " speak, speak.")
    shown = answer(browser, "fill")
    check_denoising_was_drawn(browser)
    canvas = browser.find_element(By.ID, "canvas").text
    assert canvas.startswith("First Citizen: Before we proceed") and canvas.endswith(" speak, speak.")
    browser.save_screenshot(str(tmp_path / "infill.png"))
    expected = api_text(page_server, "/v1/completions", {"prompt": "First Citizen: Before we proceed",
                                                         "suffix": " speak, speak.", "max_tokens": 10})
    assert shown == expected


@pytest.mark.parametrize(("field", "value", "words"), [
    ("prefix", "", "prompt is empty"),
    ("gap", "0", "max_tokens"),
    ("gap", "100000", "exceeds the model's"),
    ("threshold", "1.5", "threshold"),
])
def test_bad_input_gives_a_message_and_the_page_keeps_working(browser, page_server, field, value, words) -> None:
    open_page(browser, page_server)
    browser.find_element(By.ID, "tab-infill").click()
    type_into(browser, "prefix", "Before we proceed")
    type_into(browser, "gap", "6")
    type_into(browser, field, value)
    browser.find_element(By.ID, "fill").click()
    message = browser.find_element(By.ID, "message")
    WebDriverWait(browser, 60).until(lambda driver: message.text)
    assert words in message.text and "Traceback" not in message.text
    assert message.is_displayed()
    type_into(browser, field, {"prefix": "Before we proceed", "gap": "6", "threshold": "0.9"}[field])
    browser.find_element(By.ID, "fill").click()
    assert finished(browser) == "done"
    assert message.text == ""


@pytest.fixture(scope="module")
def block_server() -> Iterator[Running]:
    """The bundled model run block-causally (block size 4), its end tokens suppressed so every answer takes many
    steps."""
    from llamafactory.ddm import DiffusionLM
    from llamafactory.serve.engine import Engine
    from llamafactory.serve.launch import load_engine

    loaded = load_engine([f"model_name_or_path={BUNDLED}"])
    model = DiffusionLM(loaded.model.model, loaded.model.tokens, shift=loaded.model.shift, block_size=4).eval()
    block = Engine.load(model, loaded.tokenizer, str(BUNDLED), "diffugpt-tiny-block4",
                        overrides={"suppress_tokens": sorted(loaded.end_ids)})
    with serve_in_background(block, page=True, max_batch=16, max_queue=64, timeout=120) as running:
        yield running


def test_a_block_diffusion_model_in_the_page(browser, block_server) -> None:
    open_page(browser, block_server)
    assert "block size 4" in browser.find_element(By.ID, "model").text
    type_into(browser, "max_tokens", "12")
    type_into(browser, "block_length", "4")
    type_into(browser, "prompt", "Before we proceed")
    shown = answer(browser, "send")
    frames = check_denoising_was_drawn(browser)
    assert len(frames[0]["tokens"]) == 12
    masks = [frame["tokens"].count(None) for frame in frames]
    assert masks[-1] == 0 and any(m % 4 == 0 and m > 0 for m in masks[1:])  # blocks finish left to right
    messages = [{"role": "user", "content": "Before we proceed"}]
    expected = api_text(block_server, "/v1/chat/completions", {"block_length": 4, "max_tokens": 12,
                                                               "messages": messages})
    assert shown == expected
    browser.find_element(By.ID, "tab-infill").click()
    type_into(browser, "prefix", "Before we proceed")
    type_into(browser, "gap", "4")
    type_into(browser, "suffix", " speak.")
    browser.find_element(By.ID, "fill").click()
    assert finished(browser) == "error"
    assert "needs a full-sequence diffusion model" in browser.find_element(By.ID, "message").text

