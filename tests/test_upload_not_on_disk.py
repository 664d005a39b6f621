"""An upload over 1 MiB, sent by a real browser to `streamlit run app.py`, is never written to a file by the server.

Streamlit parses uploads with Starlette's multipart parser, which spooled any file over 1 MiB to an unnamed temporary
file: the app said uploads are held in memory only. The server runs under strace here, which sees every file it
opens and writes, named or not."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests import app_helpers as helpers
from tests.test_browser import CHROMIUM, CHROMIUM_FLAGS, WAIT_MS, wait_idle

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent


def test_a_large_upload_is_not_spooled_to_a_file_by_the_server(tmp_path):
    from bench.app import streamlit_server, wait_served

    if not shutil.which("strace"):
        pytest.fail("strace not found: `apt-get install strace` (this test watches the server's file writes)")
    from PIL import Image

    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        pytest.fail(f"Chromium not found at {CHROMIUM}: `apt-get install chromium`")

    weights = helpers.build_models(tmp_path / "weights")
    upload = tmp_path / "scan.png"  # noise does not compress: about 3 MB
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (1800, 1800), dtype=np.uint8)).save(upload)
    assert upload.stat().st_size > 3 * 2**20
    trace, log = tmp_path / "strace.txt", tmp_path / "server.log"
    strace = ("strace", "-f", "-y", "-qq", "-s", "16", "-o", str(trace), "-e", "trace=open,openat,creat,write,pwrite64,writev")
    env = {"CADP_WEIGHTS_DIR": str(weights), "OMP_NUM_THREADS": "1"}
    from playwright.sync_api import sync_playwright

    with streamlit_server(env, log, prefix=strace) as (url, server, started):
        wait_served(url, server, started, timeout=120)
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
            try:
                page = chromium.new_page()
                page.set_default_timeout(WAIT_MS)
                page.goto(f"{url}/image")
                wait_idle(page)
                page.locator("input[type=file]").first.set_input_files(str(upload))
                page.get_by_text("The classifier suggests").wait_for()  # the server has the whole file
                wait_idle(page)
            finally:
                chromium.close()
    lines = trace.read_text(errors="replace").splitlines()
    assert any("openat(" in line for line in lines), "strace saw nothing: " + log.read_text(errors="replace")[-2000:]
    unnamed = [line for line in lines if "O_TMPFILE" in line]
    # a write of the PNG's bytes to any file: its signature starts the upload, "\211PNG" as strace prints it
    png_written = [line for line in lines if re.search(r"write(v|64)?\(\d+<(?!socket:|pipe:|anon_inode:)", line)
                   and "\\211PNG" in line]
    assert not unnamed and not png_written, "\n".join((unnamed + png_written)[:10])
