"""CLI helpers: KEY=VALUE parsing and the exit status a finished run maps to."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import typer
from typer.testing import CliRunner

from runyard.cli.main import app
from runyard.cli.options import parse_kv
from runyard.cli.output import exit_status
from runyard.cli.serve import is_loopback
from runyard.models import RunState
from runyard.schemas import RunView


def test_parse_kv_reads_json_values() -> None:
    assert parse_kv(["a=1", "b=true", "c=hello", "d=[1,2]", "e=a=b"], "p") == {
        "a": 1, "b": True, "c": "hello", "d": [1, 2], "e": "a=b",
    }  # fmt: skip
    with pytest.raises(typer.BadParameter):
        parse_kv(["novalue"], "p")
    for odd in ("f=1e309", "f=NaN", "f=-Infinity", "f=[1, 1e999]"):
        with pytest.raises(typer.BadParameter, match=r"f: .* is no JSON number"):
            parse_kv([odd], "param")


def test_labels_are_sent_as_typed() -> None:
    """A probe: `-l a=1e3 -l b=true -l c=null` were sent as "1000.0", "True" and "None", and
    the run could not be found by the label it was given."""
    from runyard.cli.options import parse_labels

    typed = ["a=1e3", "b=true", "c=null", "d=1e309", "e=x=y", "f="]
    assert parse_labels(typed) == {
        "a": "1e3", "b": "true", "c": "null", "d": "1e309", "e": "x=y", "f": "",
    }  # fmt: skip
    with pytest.raises(typer.BadParameter):
        parse_labels(["novalue"])


@pytest.mark.parametrize(
    ("state", "code", "expected"),
    [("succeeded", 0, 0), ("failed", 7, 7), ("failed", None, 1), ("timed_out", None, 124),
     ("cancelled", None, 130), ("failed", 255, 255),
     # a shell keeps the low 8 bits: a failed run must never read as success (a probe: 256)
     ("failed", 256, 1), ("failed", 512, 1), ("failed", -1, 1), ("failed", 0, 1)],
)  # fmt: skip
def test_exit_status(state: str, code: int | None, expected: int) -> None:
    now = datetime.now(UTC)
    run = RunView(
        id="r", job="j", params={}, state=RunState(state), priority=0, labels={}, batch_id=None,
        schedule_id=None, idempotency_key=None, created_at=now, started_at=None, finished_at=None,
        attempt=1, exit_code=code, reason=None, progress=None, not_before=None,
        cancel_requested=False,
    )  # fmt: skip
    assert exit_status(run) == expected


def test_loopback_detection() -> None:
    assert is_loopback("127.0.0.1")
    assert is_loopback("::1")
    assert is_loopback("localhost")
    assert not is_loopback("0.0.0.0")
    assert not is_loopback("10.1.2.3")


COMMANDS = ("serve", "jobs", "submit", "run", "batch", "ls", "show", "logs", "watch", "cancel",
            "artifacts", "schedule", "token")  # fmt: skip


def test_help_lists_every_command_in_order() -> None:
    """The commands live in modules by concept; main assembles them in the order they were
    always listed."""
    shown = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "100"}).output
    names = [line.split()[1] for line in shown.splitlines()
             if line.startswith("│ ") and line.split()[1] in COMMANDS]  # fmt: skip
    assert names == list(COMMANDS)


@pytest.mark.parametrize("group", ["schedule", "token"])
def test_command_groups_answer_help(group: str) -> None:
    assert CliRunner().invoke(app, [group, "--help"]).exit_code == 0


def test_a_param_value_at_file_names_a_file_and_double_at_escapes(tmp_path) -> None:
    import typer

    from runyard.cli.options import parse_kv

    table = tmp_path / "t.csv"
    table.write_text("x")
    got = parse_kv([f"data=@{table}", "handle=@@alice", "n=3"], "param", files=True)
    assert got == {"data": table, "handle": "@alice", "n": 3}
    assert parse_kv(["handle=@alice"], "param") == {"handle": "@alice"}  # not a submit
    try:
        parse_kv(["data=@/no/such/file"], "param", files=True)
        raise AssertionError("a missing file was taken")
    except typer.BadParameter as exc:
        assert "@@" in str(exc)


def test_what_takes_no_room_is_written_out_for_a_terminal_as_the_dashboard_does() -> None:
    from runyard.cli.output import plain

    hidden = "a\u200bb\ufeffc\u00add\U000e0041e\u2060f"
    assert plain(hidden) == "a\\u200bb\\ufeffc\\xadd\\U000e0041e\\u2060f"
    assert plain("\u200d\ufe0f") == "\u200d\ufe0f"  # ZWJ and a variation selector: emoji


def test_json_for_a_terminal_escapes_past_the_bmp_as_json_reads_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import json

    from runyard.cli.output import print_json
    from runyard.schemas import JobView

    view = JobView.model_validate({
        "name": "x", "description": "tag\U000e0041 zw\u200b", "command": ["x"],
        "params_schema": {}, "timeout_s": None, "kill_grace_s": 1.0, "max_attempts": 1,
        "retry_on": [], "concurrency": None, "priority": 0, "max_queue": None,
        "workspace": "tmp", "artifacts": [],
    })  # fmt: skip
    print_json(view)
    out = capsys.readouterr().out
    assert "\U000e0041" not in out and "\u200b" not in out
    assert json.loads(out)["description"] == "tag\U000e0041 zw\u200b"
