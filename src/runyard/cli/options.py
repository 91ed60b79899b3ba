"""The options every client command shares, and how `KEY=VALUE` arguments are read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from runyard.client import Client

ServerOpt = Annotated[
    str | None, typer.Option("--server", envvar="RUNYARD_SERVER", help="Server URL.")
]
TokenOpt = Annotated[
    str | None, typer.Option("--token", envvar="RUNYARD_TOKEN", help="Bearer token.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
ParamOpt = Annotated[
    list[str],
    typer.Option(
        "-p",
        "--param",
        help="KEY=VALUE: a value that reads as JSON is JSON, but "
        "for a text param, which takes it as written.",
    ),
]
LabelOpt = Annotated[list[str], typer.Option("-l", "--label", help="KEY=VALUE label.")]


def parse_kv(
    items: list[str], what: str, files: bool = False, texts: dict[str, str] | None = None
) -> dict[str, Any]:
    """`k=v` pairs; values are read as JSON when they parse (42, true, [1,2]), else strings.
    With `files`, `k=@PATH` names a file to upload for a file param (curl's spelling).
    `texts`, if given, receives the text of each value read as JSON that is no string (for
    `as_declared`). A key given twice is refused: which one counts was the last, silently."""
    out_: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{what} {item!r} is not KEY=VALUE")
        if key in out_:
            raise typer.BadParameter(f"{what} {key} is given twice")
        if files and raw.startswith("@@"):
            raw = raw[1:]  # a value that starts with "@" itself
        elif files and raw.startswith("@"):
            path = Path(raw[1:]).expanduser()
            if not path.is_file():
                raise typer.BadParameter(
                    f"{what} {key}: {raw[1:]!r} is not a file (write @@ for a value that "
                    "starts with @)"
                )
            out_[key] = path
            continue
        try:
            value = json.loads(raw)
        except ValueError:
            out_[key] = raw
            continue
        try:  # Python's reader takes NaN, Infinity and 1e309, which JSON has not
            json.dumps(value, allow_nan=False)
        except ValueError:
            raise typer.BadParameter(
                f"{what} {key}: {raw[:40]!r} is no JSON number (NaN, Infinity, or past a "
                "double's range); quote it to send it as text"
            ) from None
        out_[key] = value
        if texts is not None and not isinstance(value, str):
            texts[key] = raw
    return out_


def as_declared(
    client: Client, job: str, params: dict[str, Any], texts: dict[str, str],
    swept: dict[str, str] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """`params` with each value read as JSON sent as its text where the job declares a text
    param: `-p message=1.0` (or `true`, `null`, `123`) on a str param was a 422 ("Input should
    be a valid string") with no hint that quoting it would do (a probe). `swept`: a sweep's
    lists as written (`texts` of `--sweep`), each element of one for a text param taken so
    too, the sweep's values replacing those params' in what is returned. The job's params
    are asked for only when such a value was given."""
    swept = swept or {}
    if not texts and not swept:
        return params
    from runyard.client_files import property_of  # with the client: the CLI starts without it

    schema = client.job(job).params_schema

    def is_text(key: str) -> bool:  # a str param (a file param's `upload:ID` is no number)
        return property_of(schema, key).get("type") == "string"

    out_ = dict(params)
    out_.update({key: text for key, text in texts.items() if is_text(key)})
    out_.update({key: _as_written(raw) for key, raw in swept.items() if is_text(key)})
    return out_


def _as_written(raw: str) -> list[Any]:
    """A JSON list with its numbers as the text they were written in (`[1, 1e3]`: "1",
    "1e3") and true, false and null as those words; anything else as it reads."""
    words = {True: "true", False: "false"}
    values = json.loads(raw, parse_int=str, parse_float=str, parse_constant=str)
    return [
        "null" if v is None else words[v] if isinstance(v, bool) else v
        for v in (values if isinstance(values, list) else [values])
    ]


def parse_labels(items: list[str]) -> dict[str, str]:
    """Labels are text, sent as typed (`-l a=1e3` is "1e3", not "1000.0": a label read back,
    or filtered on, is the one given)."""
    out_: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"label {item!r} is not KEY=VALUE")
        out_[key] = value
    return out_
