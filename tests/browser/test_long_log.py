"""A finished run's long log opens at its end: the page read a 330 MB log whole to keep its
last 2 MB, and was held for seconds (a probe). It now asks for the last megabyte, from the
first whole line in it, and says that earlier output was left out."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from runyard.models import RunState

LINES = 300_000  # "line 1" .. "line 300000": 3.7 MB


def test_a_finished_runs_long_log_opens_at_its_last_megabyte(
    start_server, write_job, jobs_dir, page: Page
) -> None:
    write_job("long", f"command = ['sh', '-c', 'seq 1 {LINES} | sed \"s/^/line /\"']\n")
    server = start_server(jobs_dir)
    with server.client() as c:
        run = c.submit("long")
        assert server.wait_run(c, run.id).state is RunState.SUCCEEDED
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if "/logs" in r.url else None)
    page.goto(f"{server.url}/ui/#/runs/{run.id}")
    expect(page.locator("#log")).to_have_attribute("data-ended", "succeeded")
    text = page.locator("#log").inner_text()
    lines = text.rstrip("\n").split("\n")
    assert lines[-1] == f"line {LINES}"
    assert lines[0].startswith("line ") and int(lines[0][5:]) > LINES // 2  # a whole line
    assert [int(x[5:]) for x in lines] == list(range(int(lines[0][5:]), LINES + 1))
    assert len(text.encode()) <= 1_000_000
    assert any("/logs/stream?" in u and "offset=" in u for u in asked), asked
    expect(page.locator("#log-note")).to_contain_text("earlier output trimmed")
