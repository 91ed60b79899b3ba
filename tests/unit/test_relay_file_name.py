"""A download relayed to the server that holds a run's files is offered under the name the
owner would offer (api/proxy.py `_as_file`): no control or format character in it. The
relaying server built its own `Content-Disposition` from the raw path, and a program's
`inv` + U+202E + `gpj.exe` reached a save dialog as what reads `invexe.jpg`."""

from __future__ import annotations

from urllib.parse import unquote

from starlette.requests import Request

from runyard.api.proxy import _as_file
from runyard.api.routes.artifacts import download_name


def disposition(path: str) -> str:
    scope = {"type": "http", "method": "GET", "path": "/", "headers": [],
             "path_params": {"path": path}}  # fmt: skip
    return _as_file(Request(scope))["content-disposition"]


def test_a_relayed_download_is_offered_the_owners_clean_name() -> None:
    offered = unquote(disposition("outputs/inv\u202egpj\u200b.exe"))
    assert "\u202e" not in offered and "\u200b" not in offered
    assert download_name("inv\u202egpj\u200b.exe") == "invgpj.exe"
    assert "invgpj.exe" in offered


def test_a_plain_name_is_offered_as_it_is() -> None:
    assert disposition("outputs/report.csv") == 'attachment; filename="report.csv"'
