"""The Python client against answers that are not a runyard server's (an attacker's probe):
a small answer that would make a validation error per entry (a million `{}` took 20 GB to
say so), JSON it cannot read, stream events of the wrong shape, and downloads cut short or
longer than their listing. Each is a ClientError; a download leaves no part of a file."""

from __future__ import annotations

import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import httpx
import pytest

from runyard.client import Client
from runyard.client_guards import ClientError
from tests.e2e.test_client_hostile import RUN, Answer, Hostile, hostile, json_answer

pytestmark = pytest.mark.e2e
__all__ = ["hostile"]  # the fixture, used by name

Make = Callable[[dict[str, Answer]], Hostile]


def raw_answer(body: bytes, status: int = 200, ctype: str = "application/json") -> Answer:
    def answer(h: BaseHTTPRequestHandler) -> None:
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    return answer


def test_an_answer_of_many_bad_entries_is_one_short_error(hostile: Make) -> None:
    many: dict[str, object] = {"runs": [{}] * 50_000, "next_cursor": None}  # 18 errors each
    labels = {"id": RUN, "labels": {str(i): i for i in range(50_000)}}
    server = hostile({"/v1/runs/": json_answer(labels), "/v1/runs": json_answer(many)})
    with Client(server.url) as c:
        with pytest.raises(ClientError) as listed:
            c.runs()
        with pytest.raises(ClientError) as read:
            c.run(RUN)
    said = str(listed.value)
    assert "not a runyard answer" in said and "18 problem(s)" in said and "runs.0.id" in said
    assert len(said) < 1000
    assert len(str(read.value)) < 1000  # labels: one problem for the map, not 50,000


@pytest.mark.parametrize(
    "body",
    [b"\xff\xfe{", b"[" * 100_000 + b"]" * 100_000, b"", b"{not json"],
    ids=["utf16-guess", "deep", "empty", "broken"],
)
def test_an_answer_that_is_not_json_it_can_read_is_a_client_error(
    hostile: Make, body: bytes
) -> None:
    server = hostile({"/v1/jobs": raw_answer(body)})
    with Client(server.url) as c, pytest.raises(ClientError) as caught:
        c.jobs()
    assert "not JSON it can read" in str(caught.value)


def sse(*events: tuple[str, str]) -> Answer:
    body = "".join(f"event: {name}\ndata: {data}\n\n" for name, data in events).encode()
    return raw_answer(body, ctype="text/event-stream")


@pytest.mark.parametrize(
    "events",
    [
        [("attempt", "[1]")],
        [("attempt", '{"attempt": "one"}')],
        [("attempt", "{}")],
        [("attempt", '{"attempt": 1}'), ("end", "null")],
        [("attempt", '{"attempt": 1}'), ("end", "[]")],
    ],
    ids=["attempt-list", "attempt-text", "attempt-missing", "end-null", "end-list"],
)
def test_a_log_stream_event_of_the_wrong_shape_is_a_client_error(
    hostile: Make, events: list[tuple[str, str]]
) -> None:
    server = hostile({f"/v1/runs/{RUN}/logs/stream": sse(*events)})
    with Client(server.url) as c, pytest.raises(ClientError):
        list(c.stream_log(RUN, retries=0))


def test_an_events_stream_event_that_is_no_object_is_a_client_error(hostile: Make) -> None:
    server = hostile({f"/v1/runs/{RUN}/events": sse(("state", "[]"))})
    with Client(server.url) as c, pytest.raises(ClientError, match="not an object"):
        list(c.stream_events(RUN, retries=0))


def listing(*names: str, size: int) -> Answer:
    at = "2026-01-01T00:00:00Z"
    return json_answer({"artifacts": [{"path": n, "size": size, "modified_at": at}
                                      for n in names]})  # fmt: skip


def content(body: bytes, announced: int | None = None) -> Answer:
    def answer(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        if announced is not None:
            h.send_header("Content-Length", str(announced))
        h.end_headers()
        h.wfile.write(body)
        h.close_connection = True

    return answer


def test_a_download_cut_short_leaves_no_file_and_keeps_a_good_copy(
    hostile: Make, tmp_path: Path
) -> None:
    good = tmp_path / "f.bin"
    good.write_bytes(b"the good copy")
    cut, listed = content(b"0123456789", announced=1000), listing("f.bin", "g.bin", size=1000)
    server = hostile({f"/v1/runs/{RUN}/artifacts/": cut, f"/v1/runs/{RUN}/artifacts": listed})
    with Client(server.url) as c, pytest.raises(httpx.HTTPError, match="1000"):
        list(c.download_all(RUN, tmp_path, overwrite=True))
    assert good.read_bytes() == b"the good copy"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]  # no part left behind


def test_a_download_longer_than_its_listing_is_refused_as_it_grows(
    hostile: Make, tmp_path: Path
) -> None:
    server = hostile({f"/v1/runs/{RUN}/artifacts/": content(b"x" * 2_000_000),  # no length
                      f"/v1/runs/{RUN}/artifacts": listing("f.bin", size=3)})  # fmt: skip
    with Client(server.url) as c, pytest.raises(ClientError, match="than the 3 bytes it said"):
        list(c.download_all(RUN, tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_a_whole_download_is_saved_under_its_name(hostile: Make, tmp_path: Path) -> None:
    server = hostile({f"/v1/runs/{RUN}/artifacts/": content(b"abc", announced=3),
                      f"/v1/runs/{RUN}/artifacts": listing("d/f.bin", size=3)})  # fmt: skip
    with Client(server.url) as c:
        assert list(c.download_all(RUN, tmp_path)) == [tmp_path / "d" / "f.bin"]
    assert (tmp_path / "d" / "f.bin").read_bytes() == b"abc"
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["f.bin"]  # no part left over


def test_a_download_never_overwrites_a_file_unless_asked(hostile: Make, tmp_path: Path) -> None:
    """The server names the files: `.bashrc`, downloaded into a home, replaced it."""
    mine = tmp_path / ".bashrc"
    mine.write_bytes(b"mine")
    server = hostile({f"/v1/runs/{RUN}/artifacts/": content(b"evil", announced=4),
                      f"/v1/runs/{RUN}/artifacts": listing(".bashrc", size=4)})  # fmt: skip
    with Client(server.url) as c, pytest.raises(ClientError, match="exists: not overwritten"):
        list(c.download_all(RUN, tmp_path))
    assert mine.read_bytes() == b"mine"
    assert not [a for a in server.asked if "/artifacts/" in a]  # not even fetched


def test_an_artifact_that_grew_since_it_was_listed_is_downloaded_whole(
    hostile: Make, tmp_path: Path
) -> None:
    """A running run's log, listed at 3 bytes and 10 when fetched: the server's Content-Length
    (set as it opens the file) is the bound, not the listing's size."""
    server = hostile({f"/v1/runs/{RUN}/artifacts/": content(b"0123456789", announced=10),
                      f"/v1/runs/{RUN}/artifacts": listing("grow.log", size=3)})  # fmt: skip
    with Client(server.url) as c:
        list(c.download_all(RUN, tmp_path))
    assert (tmp_path / "grow.log").read_bytes() == b"0123456789"


def test_a_name_as_long_as_a_name_may_be_is_downloaded(hostile: Make, tmp_path: Path) -> None:
    """244 bytes of name: the download's temporary name must not be longer than it."""
    name = "漢" * 80 + ".txt"
    server = hostile({f"/v1/runs/{RUN}/artifacts/": content(b"abc", announced=3),
                      f"/v1/runs/{RUN}/artifacts": listing(name, size=3)})  # fmt: skip
    with Client(server.url) as c:
        list(c.download_all(RUN, tmp_path))
    assert (tmp_path / name).read_bytes() == b"abc"


def test_a_file_replaced_on_request_keeps_its_mode(hostile: Make, tmp_path: Path) -> None:
    mine = tmp_path / "secret.txt"
    mine.write_bytes(b"old")
    mine.chmod(0o600)
    server = hostile({f"/v1/runs/{RUN}/artifacts/": content(b"new", announced=3),
                      f"/v1/runs/{RUN}/artifacts": listing("secret.txt", size=3)})  # fmt: skip
    with Client(server.url) as c:
        list(c.download_all(RUN, tmp_path, overwrite=True))
    assert mine.read_bytes() == b"new" and mine.stat().st_mode & 0o777 == 0o600


def test_a_compressed_answer_is_refused_before_it_is_inflated(hostile: Make) -> None:
    """A probe: 1.8 KB of gzip inside gzip took 2 GB of the client's memory, httpx inflating
    each piece whole before the 64 MiB cap saw it. The client asks for no encoding, and one
    given all the same is refused unread."""
    import gzip

    asked: list[str] = []
    bomb = gzip.compress(gzip.compress(bytes(64 * 2**20)))  # 64 MiB of zeros, twice over

    def answer(h: BaseHTTPRequestHandler) -> None:
        asked.append(h.headers.get("Accept-Encoding", ""))
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Encoding", "gzip, gzip")
        h.send_header("Content-Length", str(len(bomb)))
        h.end_headers()
        h.wfile.write(bomb)

    server = hostile({"/v1/jobs": answer})
    with Client(server.url) as c, pytest.raises(ClientError) as caught:
        c.jobs()
    assert "is compressed ('gzip, gzip')" in str(caught.value)
    assert asked == ["identity"]


def trickled_head(h: BaseHTTPRequestHandler) -> None:
    """A head that never ends, a byte at a time, each well inside the client's read timeout."""
    h.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Slow: ")
    h.wfile.flush()
    try:
        while True:
            h.wfile.write(b"a")
            h.wfile.flush()
            time.sleep(0.2)  # the hostile server's pace: nothing here waits on it
    except OSError:
        return  # the client gave up and closed the connection


@pytest.mark.timeout(30)
def test_an_answer_whose_head_trickles_is_given_up_at_the_read_timeout(hostile: Make) -> None:
    """A probe: a server sending its headers a byte every few seconds held every CLI command
    and SDK call for as long as it went on (httpx's timeout is per read). The head comes
    whole within the read timeout (a stream's: a minute of silence), or the call ends."""
    server = hostile({"/v1/jobs": trickled_head})
    given_up = pytest.raises(httpx.ReadTimeout, match=r"did not come whole within 1\.5 s")
    with Client(server.url, timeout=1.5) as c, given_up:
        c.jobs()


def test_a_proxy_from_the_environment_is_still_used(
    hostile: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A review: giving httpx a transport of the client's own (for the head's deadline) made it
    skip HTTP_PROXY and the like: a client behind a proxy could reach nothing."""
    proxy = hostile({"http://runyard.invalid/v1/jobs": json_answer({"jobs": [], "errors": {}})})
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with Client("http://runyard.invalid", timeout=5) as c:
        assert c.jobs().jobs == []
    assert proxy.asked == ["http://runyard.invalid/v1/jobs"]
