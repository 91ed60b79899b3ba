"""A run's page follows its log across a retry: each attempt once. The page asked for the
latest attempt once one had ended, and while the retry waited for its backoff the latest was
the attempt just ended: replayed whole every half second, its lines shown again and again (a
probe: 7 times each in 12 s)."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from runyard.models import RunState

RETRIED = (
    'command = ["sh", "-c", "for i in 1 2 3; do echo attempt $RUNYARD_ATTEMPT line $i; done; '
    '[ $RUNYARD_ATTEMPT -gt 1 ] || exit 75"]\n'
    "max_attempts = 2\nretry_on = [75]\n[backoff]\nbase_s = 3\nfactor = 1\nmax_s = 3\njitter = 0\n"
)


def test_a_retried_runs_log_shows_each_attempt_once(
    start_server, write_job, jobs_dir, page: Page
) -> None:
    write_job("retried", RETRIED)
    server = start_server(jobs_dir)
    with server.client() as c:
        run = c.submit("retried")
        page.goto(f"{server.url}/ui/#/runs/{run.id}")
        assert server.wait_run(c, run.id).state is RunState.SUCCEEDED
    log = page.locator("#log")
    expect(log).to_contain_text("attempt 2 line 3")
    text = log.inner_text()
    assert text.count("attempt 1 line 1") == 1, text
    assert text.count("attempt 1 ended; run is queued") == 1, text
    assert text.count("attempt 2 line 1") == 1, text
