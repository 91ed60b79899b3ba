"""The dashboard driven in a real Chromium against a real server: what a user clicks works."""

from __future__ import annotations

import json
import re
from pathlib import Path

from playwright.sync_api import APIResponse, Page, Route, expect

from runyard.auth import Role, create_token
from tests import web
from tests.support import wait_for


def test_submit_from_the_form_then_watch_it_finish_and_download_an_artifact(
    start_server, page: Page, tmp_path: Path
) -> None:
    server = start_server()
    page.goto(f"{server.url}/ui/#/jobs/simulate")
    page.fill("#param-ticks", "3000")
    page.fill("#param-seed", "11")
    page.fill("#param-pace", "0.05")
    page.click("#submit-run")

    expect(page).to_have_url(re.compile(r"#/runs/[0-9A-Z]{26}$"))
    run_id = page.url.rsplit("/", 1)[1]
    # the progress bar and the log follow the run to its end, live
    expect(page.locator(".run-head .badge")).to_have_text("succeeded")
    expect(page.locator("#progress-text")).to_have_text(re.compile(r"^100% · tick 3000/3000"))
    expect(page.locator("#log")).to_have_attribute("data-ended", "succeeded")
    log = page.locator("#log").inner_text()
    assert "tick 3000/3000" in log and log.rstrip().splitlines()[-1].startswith("done ")
    assert log == web.get(f"{server.url}/v1/runs/{run_id}/logs").text

    item = page.locator("li[data-path='outputs/result.json']")
    with page.expect_download() as info:
        item.locator(".download").click()
    saved = tmp_path / "result.json"
    info.value.save_as(saved)
    assert json.loads(saved.read_text())["ticks"] == 3000
    assert info.value.suggested_filename == "result.json"

    page.locator("li[data-path='outputs/trajectory.csv'] .preview-btn").click()
    expect(page.locator("#preview table.csv th").first).to_have_text("tick")
    page.locator("li[data-path='outputs/trajectory.png'] .preview-btn").click()
    image = page.locator("#preview img")
    expect(image).to_be_visible()
    assert image.evaluate("img => img.naturalWidth") == 480  # the real PNG, decoded


def test_an_out_of_range_param_shows_the_servers_422_next_to_the_field(
    start_server, page: Page
) -> None:
    server = start_server()
    page.goto(f"{server.url}/ui/#/jobs/simulate")
    page.fill("#param-ticks", "0")
    expect(page.locator("#err-ticks")).not_to_be_empty()  # the form's own hint, as you type
    with page.expect_response(lambda r: r.url.endswith("/v1/runs")) as answer:
        page.click("#submit-run")
    assert answer.value.status == 422
    expect(page.locator("#err-ticks")).to_contain_text("greater than or equal to 1")
    expect(page.locator("#err-seed")).to_be_empty()
    assert page.url.endswith("#/jobs/simulate")  # still on the form
    assert web.get(f"{server.url}/v1/runs").json()["runs"] == []  # nothing was created


def test_an_answer_that_comes_after_a_newer_one_does_not_undo_it(start_server, page: Page) -> None:
    """The page re-reads the run on each state event; a read of a running run can be answered
    after a later read of the ended run (it reads the latest progress first). Held back here
    until the page shows the end, that older answer must not put the page back to running."""
    server = start_server()
    with server.client() as c:
        run = c.submit("sleeper", {"seconds": 300})
        wait_for(lambda: c.run(run.id).state.value == "running", what="sleeper running")
    held: list[tuple[Route, APIResponse]] = []
    reads = 0

    def hold_the_first_re_read(route: Route) -> None:
        nonlocal reads
        reads += 1
        if reads == 2:  # the first re-read (the first read is the page's own, at load)
            held.append((route, route.fetch()))  # the answer of the running run, kept
        else:
            route.continue_()

    page.route(re.compile(rf"/v1/runs/{run.id}$"), hold_the_first_re_read)
    page.goto(f"{server.url}/ui/#/runs/{run.id}")
    for _ in range(1500):  # route handlers run while Playwright is called, not in a sleep
        if held:
            break
        page.wait_for_timeout(20)
    assert held[0][1].json()["state"] == "running"
    page.click("#cancel")
    expect(page.locator(".run-head .badge")).to_have_text("cancelled")
    route, stale = held[0]
    with page.expect_request_finished(lambda r: r.url.endswith(f"/v1/runs/{run.id}")):
        route.fulfill(response=stale)
    page.evaluate("() => new Promise((done) => setTimeout(done, 200))")  # it is applied, or not
    expect(page.locator(".run-head .badge")).to_have_text("cancelled")
    expect(page.locator("#cancel")).to_have_count(0)


def test_cancel_a_running_run_from_its_page(start_server, page: Page) -> None:
    server = start_server()
    with server.client() as c:
        run = c.submit("sleeper", {"seconds": 300})
        wait_for(lambda: c.run(run.id).state.value == "running", what="sleeper running")
    page.goto(f"{server.url}/ui/#/runs/{run.id}")
    expect(page.locator(".run-head .badge")).to_have_text("running")
    page.click("#cancel")
    expect(page.locator(".run-head .badge")).to_have_text("cancelled")
    expect(page.locator("#cancel")).to_have_count(0)  # nothing left to cancel
    assert web.get(f"{server.url}/v1/runs/{run.id}").json()["state"] == "cancelled"


def test_the_runs_table_follows_new_runs_without_reloading(start_server, page: Page) -> None:
    server = start_server()
    page.goto(f"{server.url}/ui/#/runs")
    expect(page.locator("td.empty")).to_have_text("No runs match.")
    with server.client() as c:
        run = c.submit("simulate", {"ticks": 500, "pace": 0.05})
    row = page.locator(f"tr[data-id='{run.id}']")
    expect(row.locator(".badge")).to_have_text("succeeded")  # appeared, ran, ended: live
    expect(row.locator(".progress")).to_have_attribute("aria-valuenow", "100")
    expect(page.locator("#hdr-queued")).to_have_text("0")


def test_a_protected_server_asks_for_a_token_and_shows_only_what_the_role_may_do(
    start_server, page: Page, tmp_path: Path
) -> None:
    tokens_file = tmp_path / "tokens.toml"
    reader = create_token(tokens_file, "viewer", Role.READ)
    submitter = create_token(tokens_file, "alice", Role.SUBMIT)
    server = start_server(env={"RUNYARD_TOKENS_FILE": str(tokens_file)})
    run = web.post(f"{server.url}/v1/runs", json={"job": "sleeper", "params": {"seconds": 300}},
                     headers={"Authorization": f"Bearer {submitter}"}).json()  # fmt: skip
    urls: list[str] = []
    page.on("request", lambda r: urls.append(r.url))

    page.goto(f"{server.url}/ui/#/runs/{run['id']}")
    expect(page.locator("#token-dialog")).to_be_visible()
    page.fill("#token-input", reader)
    page.click("#token-form button[type=submit]")
    expect(page.locator(".run-head h1")).to_contain_text("sleeper")
    expect(page.locator("#cancel")).to_have_count(0)  # read role: no cancel, no resubmit
    expect(page.locator("#resubmit")).to_have_count(0)

    page.click("#token-button")
    page.fill("#token-input", submitter)
    page.click("#token-form button[type=submit]")
    expect(page.locator("#cancel")).to_be_visible()
    assert not [u for u in urls if reader in u or submitter in u]  # never in a URL


def test_ten_thousand_runs_are_paged_not_loaded(
    start_server, page: Page, write_job, jobs_dir
) -> None:
    write_job("hold", 'command = ["sleep", "300"]\nconcurrency = 1\n')
    server = start_server(jobs_dir, capacity=1)
    made = web.post(f"{server.url}/v1/batches", json={"job": "hold", "iterations": 10_000},
                      timeout=60)  # fmt: skip
    assert made.status_code == 202
    sizes: list[int] = []
    page.on("response", lambda r: sizes.append(len(r.body())) if "/v1/runs?" in r.url else None)

    page.goto(f"{server.url}/ui/#/runs")
    expect(page.locator("tr[data-id]")).to_have_count(50)
    expect(page.locator("#older")).to_be_enabled()
    first = page.locator("tr[data-id]").first.get_attribute("data-id")
    page.click("#older")
    expect(page.locator("#runs-status")).to_contain_text("page 2")
    expect(page.locator("tr[data-id]")).to_have_count(50)
    assert page.locator("tr[data-id]").first.get_attribute("data-id") != first
    page.click("#newer")
    expect(page.locator("tr[data-id]").first).to_have_attribute("data-id", first or "")
    assert sizes and max(sizes) < 200_000  # a page at a time, never the 10,000


def test_the_schedules_page_shows_every_page_of_schedules(start_server, page: Page) -> None:
    """GET /v1/schedules comes in pages: the page reads each (pages of two here)."""
    server = start_server()
    with server.client() as c:
        made = [c.create_schedule("simulate", interval_s=3600, paused=True).id for _ in range(5)]
    asked: list[str] = []

    def small_pages(route: Route) -> None:
        asked.append(route.request.url)
        route.continue_(url=route.request.url.replace("limit=500", "limit=2"))

    page.route(re.compile(r".*/v1/schedules\?.*"), small_pages)
    page.goto(f"{server.url}/ui/#/schedules")
    for schedule_id in made:
        expect(page.locator(f"tr[data-id='{schedule_id}']")).to_have_count(1)
    expect(page.locator("tbody tr")).to_have_count(5)
    assert len(asked) >= 3  # 2 + 2 + 1
