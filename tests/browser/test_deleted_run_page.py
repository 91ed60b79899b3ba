"""A run deleted while its page is open (its TTL, another user) is said so on the page: it
kept showing the run as stored, with its buttons, and no word of it (a probe)."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from runyard.models import RunState
from tests import web


def test_the_page_of_a_run_deleted_meanwhile_says_so(start_server, page: Page) -> None:
    server = start_server()
    with server.client() as c:
        run = c.submit("true")
        assert server.wait_run(c, run.id).state is RunState.SUCCEEDED
    page.goto(f"{server.url}/ui/#/runs/{run.id}")
    expect(page.locator(".run-head .badge")).to_have_text("succeeded")
    expect(page.locator("#run-deleted")).to_have_count(0)
    assert web.delete(f"{server.url}/v1/runs/{run.id}").status_code == 204
    expect(page.locator("#run-deleted")).to_contain_text("This run was deleted")
