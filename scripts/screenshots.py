"""Screenshots of every dashboard page at 1280x800, into docs/screenshots/.

Starts a real server on the example jobs (in a temporary data dir), gives it some work, and
photographs what a user would see. Run: .venv/bin/python scripts/screenshots.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.browser.chromium import VIEWPORT, launch  # noqa: E402
from tests.support import EXAMPLE_JOBS, ServerProcess, free_port, kill_everything  # noqa: E402

OUT = REPO / "docs" / "screenshots"


def seed(server: ServerProcess) -> str:
    """Some history and some live work; returns a finished simulation's run id."""
    with server.client() as c:
        done = c.submit("simulate", {"ticks": 20000, "seed": 7})
        server.wait_run(c, done.id)
        c.submit("fail", {"code": 3})
        for seed_ in range(1, 7):
            c.submit("simulate", {"ticks": 5000, "seed": seed_, "pace": round(0.4 + seed_ / 10, 1)},
                     labels={"study": "drift"})  # fmt: skip
        c.submit("sleeper", {"seconds": 60})
    import httpx  # the client has no batch/schedule helpers with these exact shapes

    httpx.post(f"{server.url}/v1/batches", json={"job": "simulate", "params": {"ticks": 2000},
               "sweep": {"seed": [1, 2, 3, 4, 5, 6, 7, 8]}})  # fmt: skip
    httpx.post(f"{server.url}/v1/schedules", json={"job": "simulate", "params": {"ticks": 100},
               "cron": "0 3 * * *"})  # fmt: skip
    httpx.post(f"{server.url}/v1/schedules", json={"job": "true", "interval_s": 3600})
    return done.id


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        server = ServerProcess(data_dir=data, jobs_dir=EXAMPLE_JOBS, port=free_port(),
                               capacity=4, log_path=Path(tmp) / "server.log").start()  # fmt: skip
        try:
            finished = seed(server)
            time.sleep(2.5)  # a photograph wants runs mid-way
            with sync_playwright() as pw:
                browser = launch(pw)
                page = browser.new_page(viewport=VIEWPORT)
                # streams stay open, so "network idle" never comes: wait for what is drawn
                shots = {
                    "runs": ("#/runs", "tr[data-id]"),
                    "jobs": ("#/jobs/simulate", "#submit-form"),
                    "batches": ("#/batches", "tr[data-id]"),
                    "schedules": ("#/schedules", "tr[data-id]"),
                }
                for name, (frag, drawn) in shots.items():
                    page.goto(f"{server.url}/ui/{frag}")
                    page.locator(drawn).first.wait_for()
                    page.wait_for_timeout(600)
                    page.screenshot(path=str(OUT / f"{name}.png"))
                page.goto(f"{server.url}/ui/#/runs/{finished}")
                page.locator("#log[data-ended]").wait_for()
                page.locator("li[data-path$='trajectory.png'] .preview-btn").click()
                page.locator("#preview img").wait_for()
                page.wait_for_timeout(300)
                page.screenshot(path=str(OUT / "run.png"))
                browser.close()
        finally:
            server.stop()
            kill_everything(data)
    sys.stdout.write(f"wrote {sorted(p.name for p in OUT.glob('*.png'))} to {OUT}\n")


if __name__ == "__main__":
    main()
