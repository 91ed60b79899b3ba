"""schemathesis against the live OpenAPI document, with every check — including
`positive_data_acceptance`: whatever the schema calls valid, the server accepts (or answers
404/409/429 for what it cannot know: a job, run or schedule that does not exist). So the
document is as strict as the server: patterns for names, ids, labels and cron, the settings'
bounds (interval_s minimum, batch size), exactly one of cron and interval_s.

Run on SQLite and on PostgreSQL (NUL and lone surrogates are what PostgreSQL refuses and
SQLite stores). `scripts/fuzz-api` runs the same with many more examples."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

# a hang guard, not a threshold: 36 operations' examples take about a minute on a shared
# machine (generating from the schema is most of it), over the default 60 s
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

CLI = Path(sys.executable).parent / "schemathesis"


def fuzz(url: str, examples: int, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLI), "run", f"{url}/openapi.json", "-n", str(examples), "--checks", "all",
         "--request-timeout", "10", *extra],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip


def check(server) -> None:
    # /v1/events is a stream that never ends by itself: every example would wait out the
    # request timeout (tests/e2e/test_streams.py and the browser tests cover it)
    result = fuzz(server.url, 10, "--generation-deterministic", "--exclude-path", "/v1/events")
    assert result.returncode == 0, result.stdout[-6000:]
    assert " passed" in result.stdout
    assert "failures" not in result.stdout.splitlines()[-1]


def test_api_answers_as_its_schema_says(start_server) -> None:
    check(start_server())


def test_api_answers_as_its_schema_says_on_postgres(database, start_server) -> None:
    # `database` first: fixtures are torn down in reverse, so it is dropped after the server
    check(start_server(env={"RUNYARD_DATABASE_URL": database}))
