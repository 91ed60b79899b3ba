"""Exit records are data from outside: the strict parser takes the supervisor's own records
and refuses everything else with a reason, whatever a program or a damaged disk wrote."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from runyard.execution.executor import read_exit_file
from runyard.execution.protocol import (
    MAX_EXIT_FILE,
    BadExitRecordError,
    ExitRecord,
    UnreadableExit,
    decode,
    encode,
)

KEY = "01JDURABLE0000000000000000.1"
GOOD: dict[str, Any] = {
    "key": KEY, "pid": 4242, "exit_code": 0, "signal": None, "killed_by": None,
    "started_at": 1_700_000_000.5, "ended_at": 1_700_000_001.25, "peak_rss_kb": 2048,
    "cpu_s": 0.01, "error": None, "progress_bytes": 17,
}  # fmt: skip


def test_the_supervisors_own_records_round_trip() -> None:
    record = ExitRecord.parse(GOOD, KEY)
    assert record == ExitRecord(**GOOD)
    assert ExitRecord.parse(record.to_dict(), KEY) == record
    killed = ExitRecord.parse({**GOOD, "exit_code": None, "signal": 9, "killed_by": "timeout"})
    assert killed.describe() == "killed by SIGKILL"
    not_started = {**GOOD, "pid": None, "exit_code": 127, "started_at": None,
                   "error": "cannot start 'nope': No such file or directory"}  # fmt: skip
    assert ExitRecord.parse(not_started).error is not None
    # what an older supervisor omits is unknown, and what a newer one adds is ignored
    minimal = ExitRecord.parse({"key": KEY, "exit_code": 3, "ended_at": 5, "extra": [1]}, KEY)
    assert (minimal.exit_code, minimal.ended_at, minimal.pid) == (3, 5.0, None)
    assert isinstance(minimal.ended_at, float)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        ([1, 2, 3], "not a JSON object"),
        (None, "not a JSON object"),
        ("text", "not a JSON object"),
        ({**GOOD, "key": None}, "key is missing"),
        ({k: v for k, v in GOOD.items() if k != "key"}, "key is missing"),
        ({**GOOD, "key": "garbage"}, "key is not of the form"),
        ({**GOOD, "key": "../x.1"}, "key is not of the form"),
        ({**GOOD, "key": 7}, "key is not a string"),
        ({**GOOD, "key": "01JOTHER00000000000000000.1"}, "key names another attempt"),
        ({**GOOD, "key": "01JDURABLE0000000000000000.2"}, "key names another attempt"),
        ({**GOOD, "ended_at": None}, "ended_at is missing"),
        ({k: v for k, v in GOOD.items() if k != "ended_at"}, "ended_at is missing"),
        ({**GOOD, "ended_at": "yesterday"}, "ended_at is not a number"),
        ({**GOOD, "ended_at": -1}, "ended_at is not a number"),
        ({**GOOD, "ended_at": 1e300}, "ended_at is not a number"),
        ({**GOOD, "ended_at": True}, "ended_at is not a number"),
        ({**GOOD, "started_at": [1]}, "started_at is not a number"),
        ({**GOOD, "cpu_s": float("inf")}, "cpu_s is not a number"),
        ({**GOOD, "exit_code": "0"}, "exit_code is not an integer"),
        ({**GOOD, "exit_code": 0.0}, "exit_code is not an integer"),
        ({**GOOD, "exit_code": True}, "exit_code is not an integer"),
        ({**GOOD, "exit_code": 256}, "exit_code is not an integer"),
        ({**GOOD, "exit_code": -1}, "exit_code is not an integer"),
        ({**GOOD, "exit_code": None, "signal": "x"}, "signal is not an integer"),
        ({**GOOD, "exit_code": None, "signal": 0}, "signal is not an integer"),
        ({**GOOD, "exit_code": None, "signal": 10**30}, "signal is not an integer"),
        ({**GOOD, "signal": 9}, "both exit_code and signal"),
        ({**GOOD, "exit_code": None}, "none of exit_code, signal and error"),
        ({**GOOD, "pid": 0}, "pid is not an integer"),
        ({**GOOD, "pid": 2**40}, "pid is not an integer"),
        ({**GOOD, "peak_rss_kb": -5}, "peak_rss_kb is not an integer"),
        ({**GOOD, "progress_bytes": 2**64}, "progress_bytes is not an integer"),
        ({**GOOD, "log_cut": "yes"}, "log_cut is not true or false"),
        ({**GOOD, "log_cut": 1}, "log_cut is not true or false"),
        ({**GOOD, "killed_by": "Cancel; DROP"}, "killed_by is not of the form"),
        ({**GOOD, "killed_by": 1}, "killed_by is not a string"),
        ({**GOOD, "error": "x\0y"}, "error is not a string"),
        ({**GOOD, "error": "x" * 5000}, "error is not a string"),
        ({**GOOD, "error": {"deep": 1}}, "error is not a string"),
    ],
)
def test_anything_else_is_refused_with_a_reason(data: object, why: str) -> None:
    with pytest.raises(BadExitRecordError, match=why.replace("(", r"\(")):
        ExitRecord.parse(data, KEY)


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"", "not JSON"),
        (b"\x00garbage{", "not JSON"),
        (b"\xff\xfe{}", "not JSON"),
        (json.dumps({**GOOD, "ended_at": float("nan")}).encode(), "not JSON: NaN"),
        (json.dumps({**GOOD, "cpu_s": float("inf")}).encode(), "not JSON: Infinity"),
        (b"[" * 40_000 + b"]" * 40_000, "over 65536 bytes"),
        (b"[" * 20_000 + b"]" * 20_000, "nested too deeply"),
        (b'{"key": 1' + b"0" * 5000 + b"}", "not JSON"),  # more digits than int() takes
        (b" " * (MAX_EXIT_FILE + 1), "over 65536 bytes"),
    ],
)
def test_a_file_that_is_not_a_record_is_refused(raw: bytes, why: str) -> None:
    with pytest.raises(BadExitRecordError, match=why):
        ExitRecord.from_file(raw, KEY)


def test_reading_an_exit_file_names_the_attempt_by_its_place(tmp_path: Path) -> None:
    path = tmp_path / "attempt-1.exit.json"
    assert read_exit_file(path, KEY) is None  # not ended yet
    path.write_text(json.dumps(GOOD))
    assert read_exit_file(path, KEY) == ExitRecord(**GOOD)
    # the same content is unreadable where another attempt's file lives
    other = "01JOTHER00000000000000000.1"
    assert read_exit_file(path, other) == UnreadableExit(
        key=other, why="unreadable exit file (key names another attempt)"
    )
    path.write_bytes(b"[" * 100_000)  # bigger than a record, and read only that far
    unreadable = read_exit_file(path, KEY)
    assert unreadable == UnreadableExit(key=KEY, why="unreadable exit file (over 65536 bytes)")
    path.unlink()
    path.mkdir()  # a directory where the file should be
    unreadable = read_exit_file(path, KEY)
    assert isinstance(unreadable, UnreadableExit)
    assert unreadable.why.startswith("unreadable exit file (")


def test_socket_messages_refuse_nan_and_deep_nesting() -> None:
    assert decode(b'{"op":"exited","n":1}\n') == {"op": "exited", "n": 1}
    for line in (b'{"x": NaN}', b'{"x": -Infinity}', b"[" * 100_000, b"[1]"):
        with pytest.raises(ValueError):  # the connection's reader handles ValueError
            decode(line)


def test_a_malformed_exit_event_is_settled_from_the_exit_file(tmp_path: Path) -> None:
    """The supervisor's socket is checked as strictly: an event that breaks the schema is not
    believed; the attempt's exit file (the durable truth) decides, or it is lost."""
    import asyncio

    from runyard.execution.executor import LocalExecutor

    got: list[ExitRecord | UnreadableExit] = []

    async def on_exit(record: ExitRecord | UnreadableExit) -> None:
        got.append(record)

    async def on_lost() -> None:
        pass

    executor = LocalExecutor(tmp_path, tmp_path, on_exit, on_lost)
    run_id = KEY.rpartition(".")[0]
    event = {"op": "exited", **GOOD}

    async def scenario() -> None:
        await executor._event(event)  # a good event is taken as it is
        await executor._event({**event, "exit_code": "0"})  # no exit file yet
        executor.paths(run_id).root.mkdir(parents=True)
        executor.paths(run_id).exit_file(1).write_text(json.dumps({**GOOD, "exit_code": 3}))
        await executor._event({**event, "ended_at": "yesterday"})  # the file decides
        await executor._event({**event, "key": "garbage"})  # names no attempt: dropped
        await executor._event({"op": "other", "key": 1})  # not an exit event

    asyncio.run(scenario())
    assert got == [
        ExitRecord(**GOOD),
        UnreadableExit(
            key=KEY,
            why="unreadable exit event (exit_code is not an integer in [0, 255]) and no exit file",
        ),
        ExitRecord(**{**GOOD, "exit_code": 3}),
    ]


def test_a_message_orjson_cannot_write_still_goes_and_reads_back() -> None:
    """A lone surrogate (a param stored before such strings were refused, rendered into
    argv): orjson refuses to write it; the message must still reach the supervisor whole."""
    message = {"op": "spawn", "argv": ["echo", "\ud800"], "big": 2**70 + 1}
    assert decode(encode(message)) == message
