"""schemathesis against the live OpenAPI document: no 5xx and no answer the schema does not
describe (status codes, content types, bodies, headers).

`positive_data_acceptance` is left out on purpose: runyard validates beyond JSON Schema
(the job must exist, params follow that job's own schema, batches are capped by max_batch,
cron must parse), and the right answer to those requests is a 4xx naming the problem.
`scripts/fuzz-api` runs the same with many more examples."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

CLI = Path(sys.executable).parent / "schemathesis"


def fuzz(url: str, examples: int, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLI), "run", f"{url}/openapi.json", "-n", str(examples), "--checks", "all",
         "--exclude-checks", "positive_data_acceptance", "--request-timeout", "10", *extra],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip


def test_api_answers_as_its_schema_says(start_server) -> None:
    server = start_server()
    # /v1/events is a stream that never ends by itself: every example would wait out the
    # request timeout (tests/e2e/test_streams.py and the browser tests cover it)
    result = fuzz(server.url, 10, "--generation-deterministic", "--exclude-path", "/v1/events")
    assert result.returncode == 0, result.stdout[-4000:]
    assert " passed" in result.stdout
    assert "failures" not in result.stdout.splitlines()[-1]
