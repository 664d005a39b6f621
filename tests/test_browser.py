"""The app in a real browser: Playwright drives Debian's Chromium against `streamlit run app.py`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests import app_helpers as helpers

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = os.environ.get("CADP_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"]
WAIT_MS = 60_000


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    from bench.app import streamlit_server, wait_served

    weights = helpers.build_models(tmp_path_factory.mktemp("browser-weights"))
    log = tmp_path_factory.mktemp("streamlit-log") / "streamlit.log"
    with streamlit_server({"CADP_WEIGHTS_DIR": str(weights), "OMP_NUM_THREADS": "1"}, log) as (url, server, started):
        try:
            wait_served(url, server, started, timeout=90)
        except RuntimeError as error:
            pytest.fail(f"{error}:\n{log.read_text(errors='replace')[-3000:]}")
        yield url


@pytest.fixture(scope="module")
def browser():
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        pytest.fail(f"Chromium not found at {CHROMIUM}: install it with `apt-get install chromium` "
                    "(the browser tests need it; they never download a browser).")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: `pip install playwright` (no `playwright install` needed).")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1400}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    yield page
    context.close()


def screenshot(page, name: str, scroll_to: str | None = None) -> None:
    """Save the viewport (Streamlit scrolls inside its main block, so full_page would not help)."""
    ARTIFACTS.mkdir(exist_ok=True)
    if scroll_to is not None:
        page.get_by_text(scroll_to, exact=True).first.evaluate("e => e.scrollIntoView({block: 'start'})")
        page.wait_for_timeout(500)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def wait_idle(page) -> None:
    """Wait until Streamlit has finished the current run."""
    page.wait_for_timeout(300)
    page.wait_for_function("!document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=WAIT_MS)


def test_home_image_upload_epsilon_slider_and_release(page, app_url, tmp_path):
    page.goto(app_url)
    page.get_by_text("The guarantees, in plain words").wait_for()
    wait_idle(page)
    screenshot(page, "home")
    assert page.title() == "CADP — content-aware differential privacy"

    page.goto(f"{app_url}/image")
    page.wait_for_function("document.title === 'Image privatization · CADP'")  # each page its own tab title
    upload = tmp_path / "digit.png"
    upload.write_bytes(helpers.png())
    page.locator("input[type=file]").first.set_input_files(str(upload))
    page.get_by_text("The classifier suggests").wait_for()
    wait_idle(page)
    epsilon = page.locator("[data-testid=stSlider]").filter(has_text="ε (epsilon)").get_by_role("slider")
    assert epsilon.get_attribute("aria-valuetext") == "10"
    epsilon.focus()
    for _ in range(3):
        epsilon.press("ArrowRight")
    wait_idle(page)
    assert epsilon.get_attribute("aria-valuetext") == "100", "the epsilon slider did not move to 100"
    page.get_by_role("button", name="Privatize").click()
    page.get_by_text("Guarantee of this release").wait_for()
    page.get_by_text("Laplace mechanism: pure epsilon-local differential privacy with epsilon = 100").wait_for()
    wait_idle(page)
    privatized = page.locator("[data-testid=stImage]").filter(has_text="privatized")
    assert privatized.count() >= 1 and privatized.first.locator("img").is_visible()
    assert page.get_by_text("digit.png — 1 release: ε = 100").count() == 1
    screenshot(page, "image-settings", scroll_to="3 · Privacy")
    screenshot(page, "image-privatized", scroll_to="4 · Release")


def test_advanced_settings_stay_open_when_the_page_above_them_changes(page, app_url):
    page.goto(f"{app_url}/image")
    page.get_by_text("Sample from the bundled test set").click()
    page.get_by_text("3 · Privacy").wait_for()
    wait_idle(page)
    page.get_by_text("Advanced", exact=True).click()
    page.get_by_text("fixed radius").click()
    wait_idle(page)
    radius = page.get_by_text("Clip radius R", exact=True)
    radius.wait_for(state="visible")  # (on a busy machine the rerun may start after wait_idle's first look)
    page.get_by_text("randomized", exact=True).click()  # adds a slider above the expander
    wait_idle(page)
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:  # (a busy machine's rerun may still be drawing the page: an expander that closed stays closed)
        radius.wait_for(state="visible", timeout=15_000)
    except PlaywrightTimeout:
        raise AssertionError("the Advanced expander closed while a fixed clip radius was set in it") from None


def test_csv_upload_release_and_download(page, app_url, tmp_path):
    from cadp.data import load_table

    table = tmp_path / "patients.csv"
    load_table("diabetes").frame.head(80).to_csv(table, index=False)
    page.goto(f"{app_url}/tabular")
    page.get_by_text("Upload a CSV", exact=True).click()
    page.locator("input[type=file]").first.set_input_files(str(table))
    page.get_by_text("The table fits the model").wait_for()
    wait_idle(page)
    page.get_by_role("button", name="Privatize table").click()
    page.get_by_text("Guarantee of this release").wait_for()
    wait_idle(page)
    screenshot(page, "tabular-privatized", scroll_to="4 · Release")
    with page.expect_download() as download_info:
        page.get_by_role("button", name="Download privatized CSV").click()
    downloaded = tmp_path / "downloaded.csv"
    download_info.value.save_as(str(downloaded))
    lines = downloaded.read_text().splitlines()
    assert lines[0].split(",")[:2] == ["age", "sex"] and len(lines) == 81

    # to another page and back through the navigation: the upload, the choices and the release are still there
    page.get_by_role("link", name="Utility curves").click()
    page.get_by_text("Utility curves", exact=True).first.wait_for()
    wait_idle(page)
    page.get_by_role("link", name="Tabular privatization").click()
    page.get_by_text("Using patients.csv, uploaded earlier in this session").wait_for()
    wait_idle(page)
    assert page.get_by_role("radio", name="Upload a CSV").is_checked()
    page.get_by_text("Guarantee of this release").wait_for()
    page.get_by_role("button", name="Forget").click()
    page.get_by_text("Upload a CSV to start.").wait_for()
    wait_idle(page)  # the run's end clears what it did not draw again; the info above can show before that
    assert page.get_by_text("Guarantee of this release").count() == 0


def test_evaluation_report_says_why_its_charts_are_missing_offline(browser, tmp_path):
    """report.html takes plotly.js from its CDN: with every network request refused, it says so."""
    from cadp.evaluate import write_report

    shutil.copy(ROOT / "weights" / "diabetes-cinn" / "eval.json", tmp_path / "eval.json")
    report = write_report(tmp_path)
    from plotly.offline import get_plotlyjs

    plotly_js = get_plotlyjs()  # the installed plotly's copy of what the CDN serves (the page checks its hash)
    for online in (False, True):
        context = browser.new_context()
        page = context.new_page()
        # offline: every request but the file itself fails; online: the CDN answered from the installed copy
        page.route("https://**/*", (lambda route: route.fulfill(body=plotly_js, content_type="text/javascript",
                                                                headers={"Access-Control-Allow-Origin": "*"}))
                   if online else (lambda route: route.abort()))
        page.goto(report.as_uri())
        page.wait_for_load_state("load")
        notice = page.locator("#cadp-offline")
        if online:
            assert notice.count() == 0 and page.locator(".js-plotly-plot").count() == 1  # the charts drew
        else:
            assert notice.is_visible() and "eval.json" in notice.inner_text()
        context.close()


def test_a_self_contained_evaluation_report_draws_offline(browser, tmp_path):
    """`cadp.evaluate report --self-contained` holds plotly.js: with every network request refused, it draws."""
    shutil.copytree(ROOT / "weights" / "diabetes-cinn", tmp_path / "model")
    done = subprocess.run([sys.executable, "-m", "cadp.evaluate", "report", "--model", str(tmp_path / "model"),
                           "--self-contained"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    context = browser.new_context()
    page = context.new_page()
    page.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file:") else route.abort())
    page.goto((tmp_path / "model" / "report.html").as_uri())
    page.wait_for_load_state("load")
    assert page.locator("#cadp-offline").count() == 0
    assert page.locator(".js-plotly-plot").count() == 1 and page.locator(".js-plotly-plot .scatterlayer").count()
    context.close()
