"""The app: cold start of `streamlit run app.py`, and with a browser, Privatize-to-render and concurrent sessions.

The browser parts drive Debian's Chromium with Playwright the way tests/test_browser.py
does (headless, the same flags); they never download a browser.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from bench import ROOT, percentile

CHROMIUM = os.environ.get("CADP_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"]
WAIT_MS = 120_000
HOME_TEXT = "The guarantees, in plain words"
IDLE = "!document.querySelector('[data-testid=\"stStatusWidget\"]')"
# every element drawn: no skeleton left (Streamlit shows one while an element's code loads, e.g. the 4.7 MB
# plotly bundle on the first chart), every image loaded and every plotly chart with its SVG
DRAWN = (" && !document.querySelector('[data-testid=\"stSkeleton\"]')"
         " && Array.from(document.querySelectorAll('[data-testid=stImage] img')).every(i => i.complete)"
         " && Array.from(document.querySelectorAll('[data-testid=stPlotlyChart]')).every(c => c.querySelector('.main-svg'))")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            response.read()
            return response.status
    except OSError:
        return None


@contextmanager
def streamlit_server(env: dict | None = None, log_path: Path | None = None, prefix: tuple[str, ...] = ()):
    """Start `streamlit run app.py` on 127.0.0.1; yield (url, process, start time from time.perf_counter).

    The server's output goes to ``log_path`` (kept) or to a temporary file (removed at the end). ``prefix`` runs
    the server under another program (a test runs it under strace).
    """
    port = free_port()
    command = [*prefix, sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
               "--server.address", "127.0.0.1", "--server.headless", "true",
               "--browser.gatherUsageStats", "false"]
    log = (open(log_path, "wb") if log_path  # closed in the finally below
           else tempfile.NamedTemporaryFile(prefix="streamlit-", suffix=".log", delete=False))
    started = time.perf_counter()
    # its own process group, stopped whole: under a ``prefix`` (strace) the server is that program's child, which
    # a signal to the program alone left running (strace detaches from it and exits)
    server = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield f"http://127.0.0.1:{port}", server, started
    finally:
        _signal_group(server, signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            _signal_group(server, signal.SIGKILL)
            server.wait(timeout=10)
        _signal_group(server, signal.SIGKILL)  # whatever of the group outlived its leader
        log.close()
        if not log_path:
            os.unlink(log.name)


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # the group is gone
        os.killpg(process.pid, signum)  # (a new session's group id is its leader's pid)


def wait_served(url: str, server: subprocess.Popen, started: float, timeout: float = 120) -> dict:
    """Seconds from process start until /_stcore/health answers 200, then until the page (/) answers 200."""
    times = {}
    for key, path in (("health_s", "/_stcore/health"), ("page_s", "/")):
        while _get(url + path) != 200:
            if server.poll() is not None or time.perf_counter() - started > timeout:
                raise RuntimeError(f"streamlit did not serve {path} within {timeout} s")
            time.sleep(0.02)
        times[key] = time.perf_counter() - started
    return times


def cold_start(repeats: int, browser: bool = False) -> dict:
    """Median and samples of process start -> health 200 -> page 200 (and -> home page rendered, with a browser).

    The browser is started before the server, so its own start-up is not counted.
    """
    if not browser:
        samples = []
        for _ in range(repeats):
            with streamlit_server() as (url, server, started):
                samples.append(wait_served(url, server, started))
        return _medians(samples)
    from playwright.sync_api import sync_playwright

    samples = []
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        for _ in range(repeats):
            page = chromium.new_page()
            with streamlit_server() as (url, server, started):
                sample = wait_served(url, server, started)
                page.goto(url)
                page.get_by_text(HOME_TEXT).wait_for(timeout=WAIT_MS)
                sample["first_render_s"] = time.perf_counter() - started
                samples.append(sample)
            page.close()
        chromium.close()
    return _medians(samples)


def _medians(samples: list[dict]) -> dict:
    return {"median": {key: statistics.median(s[key] for s in samples) for key in samples[0]}, "samples": samples}


# --------------------------------------------------------------------------- inputs

def _weights_folder(weights: str | None) -> Path:
    from cadp import hub

    return Path(weights) if weights else hub.BUNDLED_DIR


def opening_image_model(weights: str | None = None) -> str | None:
    """The model the image page opens on: the first image model the app lists (``cadp.ui.bundled_models``) in
    ``weights`` (the app's CADP_WEIGHTS_DIR; None: the bundled folder)."""
    from cadp import hub

    names = hub.model_folders(_weights_folder(weights), "image")
    return names[0] if names else None


def test_image_png(model: str | None = None, weights: str | None = None) -> tuple[bytes, str]:
    """The first test image of the data ``model`` (a model in ``weights``) was trained on, as PNG bytes, and
    where it came from; mnist's when the model is not given or its data is not a dataset shipped here."""
    from PIL import Image

    from cadp import hub
    from cadp.data import load_image_dataset

    dataset = "mnist"
    if model is not None:
        named = hub.read_config(_weights_folder(weights) / model).dataset
        dataset = named if named in ("mnist", "fashion-mnist") else dataset
    data = load_image_dataset(dataset, "test")
    buffer = io.BytesIO()
    Image.fromarray(data.images[0, 0].numpy()).save(buffer, format="PNG")
    return buffer.getvalue(), f"{dataset} test image #0"


def diabetes_csv(rows: int = 80) -> bytes:
    from cadp.data import load_table

    return load_table("diabetes").frame.head(rows).to_csv(index=False).encode()


# --------------------------------------------------------------------------- browser: Privatize -> render

def _time_presses(page, button_name: str, ledger_line: str, presses: int) -> dict:
    """Press a page's privatize button ``presses`` times; seconds until each release is rendered.

    ``ledger_line`` has a ``{releases}`` slot ("1 release", "2 releases"): the ledger text that shows once that
    press's release is drawn.
    """
    from cadp.compare import counted

    model = page.get_by_text("From: ").first.inner_text()
    seconds = []
    for press in range(1, presses + 1):
        button = page.get_by_role("button", name=button_name, exact=True)
        started = time.perf_counter()
        button.click()
        _rendered_after(page, ledger_line.format(releases=counted(press, "release")))
        seconds.append(time.perf_counter() - started)
    return {"median_s": statistics.median(seconds), "samples_s": seconds, "model": model}


def _rendered_after(page, ledger_text: str) -> None:
    """Wait until this run's ledger line shows, no run is in progress and every element is drawn."""
    page.wait_for_function(f"text => document.body.innerText.includes(text) && {IDLE}{DRAWN}",
                           arg=ledger_text, timeout=WAIT_MS, polling=10)


def privatize_to_render(url: str, presses: int, weights: str | None = None) -> dict:
    """Seconds from pressing Privatize until the result is rendered, on the image and the tabular page."""
    from playwright.sync_api import sync_playwright

    model = opening_image_model(weights)  # the page opens on that model: an image of its own data
    png, source = test_image_png(model, weights)
    results = {}
    with sync_playwright() as playwright, tempfile.TemporaryDirectory() as folder:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        context = chromium.new_context(viewport={"width": 1400, "height": 1400})
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)

        upload = Path(folder) / "image.png"
        upload.write_bytes(png)
        page.goto(f"{url}/image")
        page.locator("input[type=file]").first.set_input_files(str(upload))
        page.get_by_text("The classifier suggests").wait_for()
        page.wait_for_function(IDLE + DRAWN)  # pressed on a drawn page: its evaluation preview is a chart
        results["image"] = {**_time_presses(page, "Privatize", "image.png — {releases}:", presses),
                            "input": source}

        page.goto(f"{url}/tabular")
        page.get_by_text("The table fits the model").wait_for()
        page.wait_for_function(IDLE + DRAWN)
        results["table"] = {**_time_presses(page, "Privatize table", "rows) — {releases}:", presses),
                            "input": "bundled diabetes table (442 rows)"}
        context.close()
        chromium.close()
    return results


# --------------------------------------------------------------------------- browser: concurrent sessions

async def _session(browser, url: str, csv_path: Path, out_path: Path, start_line: asyncio.Event) -> dict:
    context = await browser.new_context(viewport={"width": 1400, "height": 1400}, accept_downloads=True)
    page = await context.new_page()
    page.set_default_timeout(WAIT_MS)
    await start_line.wait()
    started = time.perf_counter()
    try:
        await page.goto(f"{url}/tabular")
        await page.get_by_text("Upload a CSV", exact=True).click()
        await page.locator("input[type=file]").first.set_input_files(str(csv_path))
        await page.get_by_text("The table fits the model").wait_for()
        await page.wait_for_function(IDLE)
        pressed = time.perf_counter()
        await page.get_by_role("button", name="Privatize table").click()
        await page.get_by_text("Guarantee of this release").wait_for()
        await page.wait_for_function(IDLE)
        async with page.expect_download() as download_info:
            await page.get_by_role("button", name="Download privatized CSV").click()
        download = await download_info.value
        await download.save_as(str(out_path))
        finished = time.perf_counter()
        rows = len(out_path.read_text().splitlines()) - 1
        return {"total_s": finished - started, "privatize_to_download_s": finished - pressed, "rows": rows,
                "ok": True}
    except Exception as error:  # noqa: BLE001 - a failed session is a result, reported as such
        return {"total_s": time.perf_counter() - started, "ok": False, "error": f"{type(error).__name__}: {error}"}
    finally:
        await context.close()


async def _concurrent(url: str, sessions: int, rounds: int) -> list[dict]:
    from playwright.async_api import async_playwright

    results = []
    with tempfile.TemporaryDirectory() as folder:
        csv_path = Path(folder) / "patients.csv"
        csv_path.write_bytes(diabetes_csv())
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
            for round_index in range(rounds):
                start_line = asyncio.Event()
                tasks = [asyncio.create_task(_session(browser, url, csv_path,
                                                      Path(folder) / f"out-{round_index}-{i}.csv", start_line))
                         for i in range(sessions)]
                await asyncio.sleep(0.5)  # let every context open before the sessions start together
                start_line.set()
                results += await asyncio.gather(*tasks)
            await browser.close()
    return results


def concurrent_sessions(url: str, sessions: int = 5, rounds: int = 2) -> dict:
    """``sessions`` browser sessions at once, each upload CSV -> Privatize -> download; p50/p95 over all of them."""
    results = asyncio.run(_concurrent(url, sessions, rounds))
    done = [r for r in results if r["ok"]]
    totals = [r["total_s"] for r in done]
    to_download = [r["privatize_to_download_s"] for r in done]
    return {"sessions": sessions, "rounds": rounds, "completed": len(done), "failed": len(results) - len(done),
            "errors": [r["error"] for r in results if not r["ok"]],
            "rows_downloaded": sorted({r["rows"] for r in done}),
            "total_p50_s": percentile(totals, 0.5), "total_p95_s": percentile(totals, 0.95),
            "privatize_to_download_p50_s": percentile(to_download, 0.5),
            "privatize_to_download_p95_s": percentile(to_download, 0.95), "samples": results}


def browser_measurements(presses: int, sessions: int, rounds: int, weights: str | None = None) -> dict:
    """Privatize-to-render and concurrent sessions against one `streamlit run` server (bundled weights by default)."""
    with streamlit_server({"CADP_WEIGHTS_DIR": weights} if weights else None) as (url, server, started):
        wait_served(url, server, started)
        return {"privatize_to_render": privatize_to_render(url, presses, weights),
                "concurrent": concurrent_sessions(url, sessions, rounds)}
