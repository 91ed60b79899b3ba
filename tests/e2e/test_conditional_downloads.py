"""A download's conditions on its version (RFC 9110 13): a cache revalidating with
If-None-Match or If-Modified-Since gets a 304 when it holds the file as it is, a client
updating only the version it read (If-Match, If-Unmodified-Since) a 412 when the file is
another, before any Range. The ETag and Last-Modified a download sent were answered by no
condition: the whole file came back every time, whatever the client held."""

from __future__ import annotations

from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path

import httpx
import pytest

from runyard.models import RunState
from tests import web

pytestmark = pytest.mark.e2e

BODY = b"inside\n"


@pytest.fixture
def urls(start_server, write_job, jobs_dir: Path) -> list[str]:
    """The same seven bytes as an artifact and as an upload (one response serves both)."""
    # written in a second long over: its date names this version (a file written in the
    # second under way has no Last-Modified, test_a_date_names_no_version_in_its_own_second)
    write_job("file", 'command = ["sh", "-c", "mkdir -p outputs && echo inside > outputs/ok.txt'
                      ' && touch -d @1700000000.25 outputs/ok.txt"]'
                      '\nartifacts = ["outputs/**"]\n')  # fmt: skip
    server = start_server(jobs_dir)
    with server.client() as c:
        run = c.submit("file")
        assert server.wait_run(c, run.id).state is RunState.SUCCEEDED
    upload = web.put(f"{server.url}/v1/uploads", params={"name": "ok.txt"}, content=BODY)
    assert upload.status_code == 201, upload.text
    return [
        f"{server.url}/v1/runs/{run.id}/artifacts/outputs/ok.txt",
        f"{server.url}/v1/uploads/{upload.json()['id']}/content",
    ]


def _shifted(http_date: str, seconds: int) -> str:
    return formatdate(parsedate_to_datetime(http_date).timestamp() + seconds, usegmt=True)


def test_a_cache_holding_the_file_as_it_is_gets_a_304(urls: list[str]) -> None:
    for url in urls:
        full = web.get(url)
        assert full.content == BODY, full.text
        etag, modified = full.headers["etag"], full.headers["last-modified"]
        same = [
            {"If-None-Match": etag},
            {"If-None-Match": f"W/{etag}"},  # weak comparison: W/ changes nothing
            {"If-None-Match": f'"other", {etag}'},
            {"If-None-Match": "*"},
            {"If-Modified-Since": modified},
            {"If-Modified-Since": _shifted(modified, 3600)},
            {"If-None-Match": etag, "Range": "bytes=0-1"},  # the version first, then Range
            {"If-None-Match": f'"x", , {etag}'},  # an empty element is skipped (RFC 9110 5.6.1)
        ]
        for headers in same:
            for method in ("GET", "HEAD"):
                got = web.request(method, url, headers=headers)
                assert got.status_code == 304, (url, method, headers, got.status_code)
                assert got.content == b"" and got.headers["etag"] == etag, (url, headers)
        changed = [
            {"If-None-Match": '"other"'},
            {"If-Modified-Since": _shifted(modified, -3600)},
            {"If-Modified-Since": "not a date"},  # ignored, as an invalid date is
            {"If-None-Match": '"other"', "If-Modified-Since": modified},  # the tag decides
        ]
        for headers in changed:
            got = web.get(url, headers=headers)
            assert (got.status_code, got.content) == (200, BODY), (url, headers, got.status_code)


def test_a_client_updating_another_version_gets_a_412_naming_the_header(
    urls: list[str],
) -> None:
    for url in urls:
        full = web.get(url)
        etag, modified = full.headers["etag"], full.headers["last-modified"]
        refused = [
            ({"If-Match": '"other"'}, "header.If-Match"),
            ({"If-Match": f"W/{etag}"}, "header.If-Match"),  # strong comparison
            ({"If-Match": "not a tag"}, "header.If-Match"),
            ({"If-Unmodified-Since": _shifted(modified, -3600)}, "header.If-Unmodified-Since"),
        ]
        for headers, field in refused:
            got = web.get(url, headers=headers)
            assert got.status_code == 412, (url, headers, got.status_code)
            assert got.headers["content-type"] == "application/problem+json"
            assert got.json()["errors"][0]["field"] == field, got.text
        kept = [
            {"If-Match": etag},
            {"If-Match": f'"other", {etag}'},
            {"If-Match": "*"},
            {"If-Unmodified-Since": modified},
            {"If-Match": etag, "If-Unmodified-Since": _shifted(modified, -3600)},  # tag decides
            {"If-Unmodified-Since": "Mon, 01 Jan 0000 00:00:00 GMT"},  # no date: ignored
        ]
        for headers in kept:
            got = web.get(url, headers=headers)
            assert (got.status_code, got.content) == (200, BODY), (url, headers, got.status_code)
        part = web.get(url, headers={"If-Match": etag, "Range": "bytes=0-1"})
        assert (part.status_code, part.content) == (206, BODY[:2]), part.status_code


def test_no_condition_changes_a_plain_download(urls: list[str]) -> None:
    for url in urls:
        got = httpx.get(url)
        assert (got.status_code, got.content) == (200, BODY)
        assert got.headers["etag"].startswith('"') and got.headers["last-modified"]


def test_a_date_names_no_version_in_its_own_second(start_server, write_job, jobs_dir: Path) -> None:
    """A probe: a file rewritten within the second its first version was read in kept the
    same Last-Modified, so an If-Range by that date had the rest of the second version added
    to the start of the first (a file that never was), and If-Modified-Since a 304. A file
    written in a second not yet over (here: dated ahead of the clock) has no Last-Modified,
    and a date names no version of it; once that second is over, the date is its validator."""
    script = (
        "mkdir -p outputs && printf %0100d 0 > outputs/new.txt && printf %0100d 0 > outputs/old.txt"
        " && touch -d @4102444800.02 outputs/new.txt && touch -d @1700000000.52 outputs/old.txt"
    )
    write_job("dated", f'command = ["sh", "-c", "{script}"]\nartifacts = ["outputs/**"]\n')
    server = start_server(jobs_dir)
    with server.client() as c:
        run = c.submit("dated")
        assert server.wait_run(c, run.id).state is RunState.SUCCEEDED
    base = f"{server.url}/v1/runs/{run.id}/artifacts/outputs"
    new = web.get(f"{base}/new.txt", headers={"Range": "bytes=0-49"})
    assert new.status_code == 206 and "last-modified" not in new.headers, new.headers
    its_second = formatdate(4102444800, usegmt=True)
    whole = web.get(f"{base}/new.txt", headers={"Range": "bytes=50-", "If-Range": its_second})
    assert (whole.status_code, len(whole.content)) == (200, 100)  # never the rest of another
    assert web.get(f"{base}/new.txt", headers={"If-Modified-Since": its_second}).status_code == 200
    changed = web.get(f"{base}/new.txt", headers={"If-Unmodified-Since": its_second})
    assert changed.status_code == 412, changed.text
    old = web.get(f"{base}/old.txt", headers={"Range": "bytes=0-49"})
    assert old.headers["last-modified"] == formatdate(1700000000, usegmt=True)
    dated = old.headers["last-modified"]
    rest = web.get(f"{base}/old.txt", headers={"Range": "bytes=50-", "If-Range": dated})
    assert (rest.status_code, len(rest.content)) == (206, 50)
    same = web.get(f"{base}/old.txt", headers={"If-Modified-Since": old.headers["last-modified"]})
    assert same.status_code == 304
