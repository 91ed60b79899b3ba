"""Launching the machine's Chromium (Debian's package) under Playwright: Playwright's own
browser download is never used. Shared by the browser tests and scripts/screenshots.py."""

from __future__ import annotations

import os
import shutil

from playwright.sync_api import Browser, Playwright

# Without the background-networking flags Chromium keeps dialling Google, and this
# machine's closed network refuses it; root needs --no-sandbox.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 800}


def executable() -> str | None:
    return os.environ.get("RUNYARD_CHROMIUM") or shutil.which("chromium")


def launch(pw: Playwright) -> Browser:
    path = executable()
    if path is None:
        raise RuntimeError("no chromium: run scripts/browser (apt-get install chromium)")
    return pw.chromium.launch(executable_path=path, headless=True, args=FLAGS)
