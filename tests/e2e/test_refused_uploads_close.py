"""An upload refused while its body still comes is answered `Connection: close` and read no
further: a chunked PUT past max_upload_mb, a multipart file over its param's max_mb or over
max_upload_mb. Found by a probe: the 413 came on a kept-alive connection, and the server read
and dropped the rest of the body (3 GB in 4 s, 1.2 s of its event loop) before it could serve
that connection again; a body announced too large was already refused unread so."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import pytest

from tests.support import ServerProcess, wait_for

pytestmark = pytest.mark.e2e

MIB = 2**20
OFFERED = 256 * MIB  # what the client would send, were it read: far past any cap here
CHUNK = b"z" * (64 * 1024)
BOUNDARY = b"b0undary"
JOB = """
command = ["true"]
[params.data]
type = "file"
max_mb = 1
"""


def _uploads_kept(server: ServerProcess) -> list[Path]:
    """Every upload's file left under the data directory, those still incoming too."""
    uploads = server.data_dir / "uploads"
    kept = [p for p in uploads.rglob("*") if p.is_file()] if uploads.exists() else []
    return [p for p in kept if ".refs" not in p.parts]


def _send_until_refused(server: ServerProcess, head: bytes, start: bytes) -> tuple[bytes, int]:
    """The request `head` (chunked) and `start` of its body, then chunks of OFFERED bytes
    at most, sent while the answer is read: the answer, and how much body was sent before
    the server closed the connection (all of it, had it read on)."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    sent = 0

    def send() -> None:
        nonlocal sent
        try:
            sock.sendall(head + b"%x\r\n%s\r\n" % (len(start), start))
            while sent < OFFERED:
                sock.sendall(b"%x\r\n%s\r\n" % (len(CHUNK), CHUNK))
                sent += len(CHUNK)
        except OSError:
            return  # closed by the server while we were still sending: the point

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    answer = b""
    with sock:
        try:
            while chunk := sock.recv(65536):  # until the server closes the connection
                answer += chunk
        except ConnectionResetError:
            pass  # closed with our body unread: the answer came before it
        except TimeoutError:
            answer += b"\r\n(the connection was kept open)"
        sender.join(timeout=30)
    return answer, sent


def _assert_refused_and_closed(answer: bytes, sent: int, field: str | None) -> None:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), answer[:300]
    assert b"\r\nconnection: close" in head.lower(), head
    problem = json.loads(body.split(b"\r\n(", 1)[0])
    assert problem["type"] == "urn:runyard:problem:upload-too-large"
    assert problem.get("field") == field
    assert b"kept open" not in answer
    # what the socket buffers held when the server closed, not the rest of the body
    assert sent < OFFERED // 4, f"{sent / MIB:.0f} MiB of the body were read on"


def test_a_chunked_upload_past_max_upload_mb_is_answered_and_closed(start_server) -> None:
    server = start_server(env={"RUNYARD_MAX_UPLOAD_MB": "1"})
    head = (
        b"PUT /v1/uploads?name=big.bin HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    answer, sent = _send_until_refused(server, head, b"a")
    _assert_refused_and_closed(answer, sent, None)
    assert b"max_upload_mb" in answer
    wait_for(lambda: _uploads_kept(server) == [], what="the refused upload to go")


def _multipart_head() -> bytes:
    return (
        b"POST /v1/runs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Type: multipart/form-data; boundary=%s\r\n\r\n" % BOUNDARY
    )


def _file_part(run_first: bool) -> bytes:
    run = b'--%s\r\nContent-Disposition: form-data; name="run"\r\n\r\n{"job": "big"}\r\n' % BOUNDARY
    data = (
        b'--%s\r\nContent-Disposition: form-data; name="data"; filename="big.bin"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n" % BOUNDARY
    )
    return (run if run_first else b"") + data


@pytest.mark.parametrize(
    ("run_first", "limit"),
    [(True, b"max_mb"), (False, b"max_upload_mb")],  # the job known: its param's cap applies
)
def test_a_multipart_file_past_its_cap_is_answered_and_closed(
    start_server, write_job, jobs_dir: Path, run_first: bool, limit: bytes
) -> None:
    write_job("big", JOB)
    server = start_server(jobs_dir, env={"RUNYARD_MAX_UPLOAD_MB": "2"})
    answer, sent = _send_until_refused(server, _multipart_head(), _file_part(run_first))
    _assert_refused_and_closed(answer, sent, "params.data")
    assert limit in answer
    wait_for(lambda: _uploads_kept(server) == [], what="the refused file to go")


def test_a_multipart_run_part_refused_before_its_files_closes_the_connection(
    start_server, write_job, jobs_dir: Path
) -> None:
    """Its `run` part invalid (the job named by a number), a file part streaming behind it:
    the 422 came on a kept-alive connection and the file was read on to its end."""
    write_job("big", JOB)
    server = start_server(jobs_dir, env={"RUNYARD_MAX_UPLOAD_MB": "512"})
    run = b'--%s\r\nContent-Disposition: form-data; name="run"\r\n\r\n{"job": 5}\r\n' % BOUNDARY
    answer, sent = _send_until_refused(server, _multipart_head(), run + _file_part(False))
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 422"), answer[:300]
    assert b"\r\nconnection: close" in head.lower(), head
    assert json.loads(body.split(b"\r\n(", 1)[0])["errors"][0]["field"] == "body.run.job"
    assert b"kept open" not in answer
    assert sent < OFFERED // 4, f"{sent / MIB:.0f} MiB of the body were read on"
