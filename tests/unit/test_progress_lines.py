"""Progress lines are data from outside: a line any JSON client or store could not take back
(NaN, out-of-range numbers, deep nesting, NUL, lone surrogates, a huge line) is skipped and
counted, never kept."""

from __future__ import annotations

import json

import pytest

from runyard.streams.chunks import MAX_PROGRESS_DEPTH, MAX_PROGRESS_LINE, ProgressParser


def nested(depth: int) -> bytes:
    return b'{"d":' * depth + b"1" + b"}" * depth


@pytest.mark.parametrize(
    "line",
    [
        b'{"fraction": NaN}',
        b'{"fraction": Infinity}',
        b'{"fraction": -Infinity}',
        b'{"fraction": 1e999}',  # float() makes it inf
        b'{"n": 9223372036854775808}',  # 2**63
        b'{"n": -9223372036854775808}',
        b'{"n": 1' + b"0" * 5000 + b"}",  # more digits than int() takes
        nested(MAX_PROGRESS_DEPTH + 1),
        b'{"l": ' + b"[" * MAX_PROGRESS_DEPTH + b"]" * MAX_PROGRESS_DEPTH + b"}",
        nested(50_000)[:MAX_PROGRESS_LINE],  # deeper than the parser can go
        b'{"message": "a\\u0000b"}',  # PostgreSQL's jsonb refuses NUL
        b'{"a\\u0000": 1}',
        b'{"message": "\\ud800"}',  # a lone surrogate is not UTF-8
        b'{"m": "' + b"x" * MAX_PROGRESS_LINE + b'"}',
        b"[1, 2, 3]",
        b"\xff\xfe",
        # json guesses the encoding of bytes: these were taken (a probe); UTF-8 only
        '{"u16": 1}'.encode("utf-16-le"),
        '{"u32": 2}'.encode("utf-32-le"),
        '{"u16": 3}'.encode("utf-16"),
    ],
)
def test_a_line_nobody_could_read_back_is_skipped_and_counted(line: bytes) -> None:
    parser = ProgressParser()
    good = b'{"fraction": 0.5}'
    assert parser.feed(line + b"\n" + good + b"\n") == [{"fraction": 0.5}]
    assert parser.skipped == 1
    assert parser.consumed == len(line) + len(good) + 2


def test_a_byte_order_mark_before_a_line_is_no_part_of_it() -> None:
    """.NET and PowerShell write one; read as bytes, json took it (a review: decoded as
    UTF-8 first, the line was skipped)."""
    parser = ProgressParser()
    assert parser.feed(b'\xef\xbb\xbf{"pct": 5}\n') == [{"pct": 5}]
    assert parser.skipped == 0


def test_what_is_kept_round_trips_through_strict_json() -> None:
    lines = [
        nested(MAX_PROGRESS_DEPTH),
        b'{"n": 9223372036854775807, "f": 1.5e300, "m": "\\u00e9\\ud83d\\ude00 tab\\t"}',
    ]
    found = ProgressParser().feed(b"\n".join(lines) + b"\n")
    assert len(found) == 2
    for value in found:
        text = json.dumps(value, allow_nan=False)
        assert json.loads(text) == value
        text.encode("utf-8")  # no lone surrogate survived


def test_a_lines_own_attempt_gives_way_to_runyards() -> None:
    """A probe: `{"attempt": "mine"}` was kept in the run's progress, replaced by the attempt's
    number in its event, and dropped by the dashboard: three readers, three answers."""
    assert ProgressParser().feed(b'{"fraction": 0.5, "attempt": "mine"}\n') == [{"fraction": 0.5}]


def test_a_last_line_without_its_newline_counts_once_the_program_has_ended() -> None:
    """A probe: a line a program wrote without a newline just before it exited was neither
    taken nor counted. Until the end it may be half written; at the end it is whole."""
    parser = ProgressParser()
    assert parser.feed(b'{"fraction": 0.2}\n{"fraction": 0.9, "message": "last"}') == [
        {"fraction": 0.2}
    ]
    assert parser.close() == [{"fraction": 0.9, "message": "last"}]
    assert parser.consumed == len(b'{"fraction": 0.2}\n{"fraction": 0.9, "message": "last"}')
    cut = ProgressParser()
    assert cut.feed(b'{"fraction": 0.9') == []
    assert cut.close() == [] and cut.skipped == 1  # half a line: skipped and counted
    assert cut.close() == [] and cut.skipped == 1  # once


def test_a_reader_that_passes_over_lines_lands_on_the_next_whole_one(tmp_path) -> None:
    """A probe: a progress file made sparse (`truncate -s 4T`) was read 256 KiB at a time to
    its end: the run's end waited on it for minutes and the server could not stop. Far
    behind, only the last bytes are read; the line landed in is passed over."""
    from runyard.streams.cursor import FileCursor, read_latest

    path = tmp_path / "progress"
    with path.open("wb") as f:
        f.write(b'{"fraction": 0.1}\n')
        f.truncate(2**40)  # a terabyte, sparse
        f.seek(2**40)
        f.write(b'\n{"fraction": 0.2}\n')
    cursor, parser = FileCursor(), ProgressParser()
    got = read_latest(path, cursor, 4096, 16384)
    assert got.jumped_to == 2**40 + 19 - 4096 and len(got.data) == 4096
    parser.jump(got.jumped_to)
    cursor.offset = got.jumped_to
    cursor.advance(got.data)
    assert parser.feed(got.data) == [{"fraction": 0.2}]
    assert (parser.skipped, parser.coalesced) == (0, 1)
    assert parser.consumed == cursor.offset == path.stat().st_size
    assert read_latest(path, cursor, 4096, 16384).data == b""  # and nothing more to read


def test_an_oversized_line_a_reader_lands_in_is_skipped_and_counted(tmp_path) -> None:
    """A probe: a progress line of 10 MB, written at once, put the reader past its limit of
    unread bytes; it landed inside the line, which was then counted nowhere: the run showed
    neither progress nor a skipped line. What follows the landing alone is over the limit of
    a line: an oversized line, skipped and counted, whatever was passed over before it."""
    from runyard.streams.cursor import FileCursor, read_latest
    from runyard.streams.tailer import PROGRESS_BEHIND_MAX, READ_MAX

    path = tmp_path / "progress"
    path.write_bytes(b'{"fraction": 0.5}\n{"m": "' + b"x" * 10_000_000 + b'"}\n')
    cursor, parser = FileCursor(), ProgressParser()
    got = read_latest(path, cursor, READ_MAX, PROGRESS_BEHIND_MAX)
    assert got.jumped_to is not None
    parser.jump(got.jumped_to)
    assert parser.feed(got.data) == []
    assert parser.close() == []
    assert (parser.skipped, parser.coalesced) == (1, 0)
    assert parser.consumed == path.stat().st_size
