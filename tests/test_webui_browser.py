r"""LLaMA Board in headless Chromium: a GRPO run on the demo data, started and watched from the browser.

Needs Chromium and its driver (Debian: `apt-get install chromium chromium-driver`) and Selenium (`pip install
selenium`); as root with apt-get the test installs the missing pieces, elsewhere it is skipped, saying what is missing.
The screenshot lands in the test's folder and in `outputs/webui_screenshot.png`.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import BIN, DATA_REGISTRY, ROOT, cli_env


pytestmark = pytest.mark.e2e

BOARD_START_TIMEOUT = 300
RUN_TIMEOUT = 900
REWARDS = ("fea_format", "fea_emotion", "fea_au_f1")
SCREENSHOT = ROOT / "outputs" / "webui_screenshot.png"
EXTRA_ARGS = {
    "optim": "adamw_torch",
    "max_steps": 4,
    "logging_steps": 1,
    "preprocessing_num_workers": 1,
    "dataloader_num_workers": 0,
    "report_to": "none",
}


def _run_quietly(command: list[str], timeout: int) -> bool:
    r"""Run an installer command; whether it succeeded."""
    try:
        return subprocess.run(command, capture_output=True, timeout=timeout).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _browser_paths() -> tuple[str | None, str | None]:
    r"""Chromium and chromedriver on this machine, if any."""
    binary = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    return binary, shutil.which("chromedriver")


def find_browser() -> tuple[str, str]:
    r"""Chromium and its driver; installed with apt-get when missing and root, else the test is skipped."""
    binary, driver = _browser_paths()
    if (binary is None or driver is None) and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-qq", "chromium", "chromium-driver"]
        if _run_quietly(["apt-get", "update", "-qq"], 600):
            subprocess.run(install, capture_output=True, timeout=900, env=env)

        binary, driver = _browser_paths()

    if binary is None or driver is None:
        pytest.skip("Chromium and chromedriver are not installed (Debian: apt-get install chromium chromium-driver).")

    return binary, driver


def import_selenium() -> Any:
    r"""The selenium webdriver package, pip-installed into this interpreter when missing (skips if impossible)."""
    try:
        from selenium import webdriver
    except ImportError:
        if not _run_quietly([sys.executable, "-m", "pip", "install", "-q", "selenium"], 600):
            pytest.skip("selenium is not installed and could not be installed (pip install selenium).")

        from selenium import webdriver

    return webdriver


def free_port() -> int:
    r"""A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition: Callable[[], Any], timeout: float, what: str, describe: Callable[[], str] = str) -> Any:
    r"""Poll until `condition()` is truthy (its value is returned); fail after `timeout` seconds saying what."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value

        time.sleep(0.5)

    raise AssertionError(f"Gave up after {timeout} s waiting for {what}. {describe()}")


@pytest.fixture
def board(tmp_path: Path) -> Iterator[str]:
    r"""`llamafactory-fea webui` serving on 127.0.0.1 from a fresh folder; yields its URL."""
    folder, port = tmp_path / "board", free_port()
    folder.mkdir()
    env = cli_env(
        GRADIO_SERVER_NAME="127.0.0.1",
        GRADIO_SERVER_PORT=str(port),
        GRADIO_ANALYTICS_ENABLED="False",
        BROWSER="true",  # gradio's inbrowser=True opens nothing
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # the board starts `llamafactory-cli train`
    )
    log = (tmp_path / "board.log").open("w")
    process = subprocess.Popen(
        [str(BIN / "llamafactory-fea"), "webui"], cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}/"

    def is_up() -> bool:
        assert process.poll() is None, f"the board exited: {(tmp_path / 'board.log').read_text()[-3000:]}"
        try:
            return urllib.request.urlopen(url, timeout=5).status == 200
        except OSError:
            return False

    try:
        wait_for(is_up, BOARD_START_TIMEOUT, "the board to serve")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()

        log.close()


@pytest.fixture
def browser() -> Iterator[Any]:
    r"""Headless Chromium driven by Selenium."""
    binary, driver_path = find_browser()
    webdriver = import_selenium()
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1600,1400"):
        options.add_argument(argument)

    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


class BoardPage:
    r"""The Train tab of LLaMA Board, addressed by the labels a user reads."""

    def __init__(self, driver: Any) -> None:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.common.keys import Keys

        self.driver, self.by, self.keys = driver, By, Keys

    def text(self) -> str:
        r"""The visible text of the page."""
        return self.driver.find_element(self.by.TAG_NAME, "body").text

    def excerpt(self) -> str:
        r"""The end of the page text, for failure messages."""
        return "Page text ends with:\n" + self.text()[-3000:]

    def elements(self, xpath: str) -> list[Any]:
        r"""The displayed elements matching an XPath (none while the page is re-rendering them)."""
        from selenium.common.exceptions import StaleElementReferenceException

        try:
            return [element for element in self.driver.find_elements(self.by.XPATH, xpath) if element.is_displayed()]
        except StaleElementReferenceException:
            return []

    def field(self, label: str, tag: str = "input") -> Any:
        r"""The displayed input (or textarea) of the widget labelled `label`."""
        xpath = f"//*[./span[@data-testid='block-info' and normalize-space(.)='{label}']]//{tag}"
        return wait_for(lambda: next(iter(self.elements(xpath)), None), 60, f"the field {label!r}", self.excerpt)

    def choose(self, label: str, value: str) -> None:
        r"""Pick `value` in the dropdown labelled `label` (typed to filter the options, then clicked)."""
        box = self.field(label)
        box.click()
        box.send_keys(self.keys.CONTROL, "a")
        box.send_keys(value)
        option = f"//li[@data-testid='dropdown-option' and @aria-label='{value}']"
        wait_for(lambda: self.elements(option), 30, f"the option {value!r} of {label!r}", self.excerpt)[0].click()
        box.send_keys(self.keys.ESCAPE)

    def type_into(self, label: str, text: str, tag: str = "textarea") -> None:
        r"""Replace the text of the textbox (or number input) labelled `label`, then leave it."""
        box = self.field(label, tag)
        box.click()
        box.send_keys(self.keys.CONTROL, "a")
        box.send_keys(self.keys.DELETE)
        box.send_keys(text, self.keys.TAB)

    def set_slider(self, label: str, value: float) -> None:
        r"""Set a slider through its number box."""
        xpath = f"//input[@type='number' and @aria-label='number input for {label}']"
        box = wait_for(lambda: next(iter(self.elements(xpath)), None), 30, f"the slider {label!r}", self.excerpt)
        box.send_keys(self.keys.CONTROL, "a")
        box.send_keys(str(value), self.keys.TAB)

    def click(self, text: str) -> None:
        r"""Click the displayed button with this text."""
        xpath = f"//button[normalize-space(.)='{text}' or starts-with(normalize-space(.), '{text}')]"
        wait_for(lambda: self.elements(xpath), 30, f"the button {text!r}", self.excerpt)[0].click()

    def screenshot(self, path: Path, down_to: Any) -> None:
        r"""Save a screenshot of the page from its top down to the bottom of an element."""
        script = "return arguments[0].getBoundingClientRect().bottom + window.scrollY"
        bottom = self.driver.execute_script(script, down_to)
        self.driver.set_window_size(1600, int(bottom) + 160)
        self.driver.execute_script("window.scrollTo(0, 0)")
        self.driver.save_screenshot(str(path))


def fill_grpo_run(page: BoardPage, model: Path) -> None:
    r"""Set up a short GRPO run of the tiny model on the demo data, the way a user would."""
    page.choose("Model name", "Custom")
    wait_for(lambda: page.field("Chat template").get_attribute("value") == "default", 30, "the model's template")
    page.type_into("Model path", str(model))
    page.choose("Chat template", "qwen2_vl")
    page.choose("Stage", "GRPO")
    wait_for(lambda: page.elements("//*[@id='fea_grpo_tab']"), 30, "the FEA / GRPO settings", page.excerpt)
    assert page.field("Data dir", "textarea").get_attribute("value") == str(DATA_REGISTRY.resolve())
    page.choose("Dataset", "fea_demo")
    page.choose("Compute type", "fp32")
    page.set_slider("Gradient accumulation", 1)
    page.set_slider("Generations per prompt", 2)
    page.set_slider("Max completion length", 32)
    page.set_slider("KL beta", 0)
    page.click("Extra configurations")
    page.type_into("Extra arguments", json.dumps(EXTRA_ARGS))


def preview_command(page: BoardPage) -> str:
    r"""Click `Preview command` and return the command the board shows."""
    page.click("Preview command")
    return wait_for(
        lambda: next((e.text for e in page.elements("//pre") if "llamafactory-cli train" in e.text), ""),
        60,
        "the command preview",
        page.excerpt,
    )


def run_to_the_end(page: BoardPage) -> None:
    r"""Click `Start` and wait (bounded) for the board to report the end of the run."""
    page.click("Start")

    def ended() -> str:
        text = page.text()
        return "Finished." if "Finished." in text else "Failed." if "Failed." in text else ""

    assert wait_for(ended, RUN_TIMEOUT, "the run to end", page.excerpt) == "Finished.", page.excerpt()


def test_grpo_run_from_the_board(board: str, browser: Any, tiny_model: Path, tmp_path: Path):
    browser.get(board)
    page = BoardPage(browser)
    fill_grpo_run(page, tiny_model)

    command = preview_command(page)
    for expected in ("--stage grpo", "--template qwen2_vl", "--dataset fea_demo", "--num_generations 2", "--beta 0"):
        assert expected in command, command
    assert "--max_completion_length 32" in command, command
    assert f"--model_name_or_path {tiny_model}" in command, command

    run_to_the_end(page)
    label = f"Loss and rewards: {', '.join(REWARDS)}"
    plot = f"//*[contains(@class, 'block')][.//*[normalize-space(.)='{label}']]//img"
    reward_plot = wait_for(lambda: page.elements(plot), 60, "the reward curves", page.excerpt)[0]
    assert "Finished." in page.text()

    screenshot = tmp_path / "webui_screenshot.png"
    page.screenshot(screenshot, down_to=reward_plot)
    SCREENSHOT.parent.mkdir(exist_ok=True)
    shutil.copyfile(screenshot, SCREENSHOT)

    trainer_logs = list((tmp_path / "board" / "saves").glob("Custom/lora/*/trainer_log.jsonl"))
    assert len(trainer_logs) == 1
    logs = [json.loads(line) for line in trainer_logs[0].read_text().splitlines()]
    steps = [log["current_steps"] for log in logs if all(f"rewards/{name}/mean" in log for name in REWARDS)]
    assert steps == list(range(1, EXTRA_ARGS["max_steps"] + 1))
