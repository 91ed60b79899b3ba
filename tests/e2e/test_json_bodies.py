"""A JSON body is read as JSON is written, on every route that takes one (a probe): the same
key twice was taken last-wins (`{"job": "true", "job": "hello"}` ran `hello`, where a proxy
reading the first saw another request), UTF-16 was guessed and read, a gzip Content-Encoding
was ignored and a `text/plain` body answered with a 422 that blamed the body. Each is refused,
naming the header or the key, and nothing is stored."""

from __future__ import annotations

import gzip
import json
from typing import Any

import pytest

from tests import web
from tests.support import ServerProcess

pytestmark = pytest.mark.e2e

JSON = {"Content-Type": "application/json"}


def sent(server: ServerProcess, path: str, body: bytes, headers: Any = None,
         method: str = "POST") -> dict[str, Any]:  # fmt: skip
    resp = web.request(method, f"{server.url}{path}", content=body,
                       headers=JSON if headers is None else headers, timeout=30)  # fmt: skip
    assert resp.headers["content-type"].startswith("application/problem+json"), resp.text
    return {"status": resp.status_code, **resp.json()}


def nothing_stored(server: ServerProcess) -> None:
    assert web.get(f"{server.url}/v1/runs").json()["runs"] == []
    assert web.get(f"{server.url}/v1/batches").json()["batches"] == []


TWICE = [
    ("/v1/runs", b'{"job": "true", "job": "hello"}', "body.job"),
    ("/v1/runs", b'{"job": "true", "labels": {"a": "1", "a": "2"}}', "body.labels.a"),
    ("/v1/runs", b'{"job": "true", "labels": {"b": "1"}, "labels": {"b": "1"}}', "body.labels"),
    ("/v1/batches", b'{"job": "true", "iterations": 1, "iterations": 5}', "body.iterations"),
    ("/v1/schedules", b'{"job": "true", "interval_s": 60, "interval_s": 3600}',
     "body.interval_s"),
]  # fmt: skip


def test_a_key_given_twice_is_refused_naming_it(start_server) -> None:
    server = start_server()
    for path, body, field in TWICE:
        got = sent(server, path, body)
        assert (got["status"], got["field"]) == (422, field), got
        assert "given twice" in got["detail"]
        # the declared route (an Idempotency-Key takes it off the fast path) reads it alike
        keyed = sent(server, path, body, {**JSON, "Idempotency-Key": "k1"})
        assert (keyed["status"], keyed["field"]) == (422, field), keyed
    nothing_stored(server)
    assert web.get(f"{server.url}/v1/schedules").json()["schedules"] == []

    # found in one pass: a review found 40,000 keys, the last one twice, held the loop 34 s
    many = b"{" + b",".join(b'"k%d": 0' % i for i in range(80_000)) + b', "k0": 1}'
    got = sent(server, "/v1/runs", many)
    assert (got["status"], got["field"]) == (422, "body.k0"), got

    made = web.post(f"{server.url}/v1/schedules", json={"job": "true", "interval_s": 3600})
    assert made.status_code == 201, made.text
    sid = made.json()["id"]
    got = sent(server, f"/v1/schedules/{sid}", b'{"paused": true, "paused": false}',
               method="PATCH")  # fmt: skip
    assert (got["status"], got["field"]) == (422, "body.paused"), got
    assert web.get(f"{server.url}/v1/schedules/{sid}").json()["paused"] is False


UNREADABLE = [
    ('{"job": "true"}'.encode("utf-16"), "not UTF-8"),
    ('{"job": "true"}'.encode("utf-32"), "not UTF-8"),
    (b'{"job": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply"),
]
NOT_PLAIN = [
    ({"Content-Type": "text/plain"}, b'{"job": "true"}', "header.Content-Type"),
    ({}, b'{"job": "true"}', "header.Content-Type"),
    ([("Content-Type", "application/json"), ("Content-Type", "text/plain")], b'{"job": "true"}',
     "header.Content-Type"),
    ({**JSON, "Content-Encoding": "gzip"}, gzip.compress(b'{"job": "true"}'),
     "header.Content-Encoding"),
    ({**JSON, "Content-Encoding": "gzip"}, b'{"job": "true"}', "header.Content-Encoding"),
    # a probe: taken, and read as UTF-8 where a reader honouring the charset reads other text
    ({"Content-Type": "application/json; charset=latin-1"}, b'{"job": "true"}',
     "header.Content-Type"),
    ({"Content-Type": 'application/json; Charset="UTF-16"'}, b'{"job": "true"}',
     "header.Content-Type"),
]  # fmt: skip


def test_a_body_not_utf8_json_or_not_sent_as_plain_json_is_refused(start_server) -> None:
    server = start_server()
    for body, words in UNREADABLE:
        got = sent(server, "/v1/runs", body)
        assert (got["status"], got["type"]) == (400, "urn:runyard:problem:unreadable-body"), got
        assert words in got["detail"], got
    # a byte order mark is a syntax error, said where as any other is (FastAPI's 422)
    got = sent(server, "/v1/runs", b'\xef\xbb\xbf{"job": "true"}')
    assert got["status"] == 422 and "BOM" in got["errors"][0]["message"], got
    for headers, body, field in NOT_PLAIN:
        for path in ("/v1/runs", "/v1/batches", "/v1/schedules"):
            got = sent(server, path, body, headers)
            assert (got["status"], got["field"]) == (415, field), (path, got)
            assert got["type"] == "urn:runyard:problem:unsupported-media-type"
    nothing_stored(server)

    paths = web.get(f"{server.url}/openapi.json").json()["paths"]
    declared = {(p, m) for p, ops in paths.items() for m, op in ops.items()
                if "415" in op.get("responses", {})}  # fmt: skip
    assert declared == {
        ("/v1/runs", "post"),
        ("/v1/batches", "post"),
        ("/v1/schedules", "post"),
        ("/v1/schedules/{schedule_id}", "patch"),
        ("/v1/uploads", "put"),  # a Content-Encoding but identity: an upload is stored as sent
        ("/v1/uploads", "post"),
    }

    # a well-formed body, its charset said, runs
    resp = web.post(f"{server.url}/v1/runs", content=json.dumps({"job": "true"}).encode(),
                    headers={"Content-Type": "application/json; charset=utf-8"})  # fmt: skip
    assert resp.status_code == 202, resp.text
    web.delete(f"{server.url}/v1/runs/{resp.json()['id']}")
