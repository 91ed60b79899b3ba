"""`GET /v1/runs/{id}/logs` answers the log's bytes exactly as written, labelled as what they
are: UTF-8 text only when the range is (an attacker's probe: bytes that are not UTF-8 were
sent as `text/plain; charset=utf-8`), else `application/octet-stream`, as the stream frames
the same bytes (`log` or `log.b64`). A range that would end inside a character ends before it,
and the next one begins with it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from runyard.models import RunState
from tests import web
from tests.sse import watch_log
from tests.support import ServerProcess

pytestmark = pytest.mark.e2e

TEXT, BYTES = "text/plain; charset=utf-8", "application/octet-stream"
HEAD = "caf\u00e9 \u20ac1\n".encode()  # a 2-byte and a 3-byte character
LOG = HEAD + b"raw \xff\xfe bytes\n" + "tail \u20ac\n".encode()


@pytest.fixture
def server_and_run(start_server, write_job, jobs_dir: Path) -> tuple[ServerProcess, str]:
    # printf's octal escapes: the log's bytes exactly, whatever the locale
    octal = "".join(f"\\{b:03o}" for b in LOG)
    write_job("mixed", f"command = [\"printf\", '{octal}']\n")
    server = start_server(jobs_dir)
    with server.client() as c:
        run = c.submit("mixed")
        assert server.wait_run(c, run.id).state is RunState.SUCCEEDED
    return server, run.id


def logs(server: ServerProcess, run_id: str, **params: int) -> tuple[bytes, str, int]:
    resp = web.get(f"{server.url}/v1/runs/{run_id}/logs", params=params, timeout=30)
    assert resp.status_code == 200
    assert int(resp.headers["X-Log-Size"]) == len(LOG)
    return resp.content, resp.headers["content-type"], int(resp.headers["X-Next-Offset"])


def test_a_log_is_labelled_utf8_only_where_it_is(server_and_run) -> None:
    server, run_id = server_and_run
    assert logs(server, run_id) == (LOG, BYTES, len(LOG))  # \xff\xfe: not UTF-8
    assert logs(server, run_id, limit=len(HEAD)) == (HEAD, TEXT, len(HEAD))
    tail = len(LOG) - len("tail \u20ac\n".encode())
    assert logs(server, run_id, offset=tail) == (LOG[tail:], TEXT, len(LOG))
    euro = HEAD.index("\u20ac".encode())
    assert logs(server, run_id, offset=euro + 1, limit=2) == (LOG[euro + 1 : euro + 3], BYTES,
                                                              euro + 3)  # fmt: skip


def test_a_range_cut_inside_a_character_ends_before_it(server_and_run) -> None:
    server, run_id = server_and_run
    euro = HEAD.index("\u20ac".encode())
    # asked for up to the euro sign's second byte: the range stops where the sign begins
    assert logs(server, run_id, limit=euro + 2) == (HEAD[:euro], TEXT, euro)
    assert logs(server, run_id, offset=euro, limit=len(HEAD) - euro) == (
        HEAD[euro:],
        TEXT,
        len(HEAD),
    )
    # a range that is nothing but the start of a character cannot stop before it: bytes
    assert logs(server, run_id, offset=euro, limit=1) == (HEAD[euro : euro + 1], BYTES, euro + 1)


def test_the_pages_and_the_stream_give_the_same_bytes(server_and_run) -> None:
    server, run_id = server_and_run
    paged, offset = b"", 0
    while offset < len(LOG):
        data, _, offset = logs(server, run_id, offset=offset, limit=5)
        paged += data
    assert paged == LOG

    async def streamed() -> bytes:
        async with web.AsyncClient(timeout=30) as client:
            got = await watch_log(client, f"{server.url}/v1/runs/{run_id}/logs/stream")
        return bytes(got.data)

    assert asyncio.run(streamed()) == LOG
