"""However a progress file is cut into reads (the tailer reads whatever has been written), the
parser finds the same progress, counts the same bad lines, never raises, and its resume point
is always the end of a whole line."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from runyard.streams.chunks import MAX_PROGRESS_LINE, ProgressParser

LINES = st.one_of(
    st.builds(lambda f: json.dumps({"fraction": f}).encode(), st.floats(0, 1)),
    st.builds(lambda m: json.dumps({"message": m}).encode(), st.text(max_size=40)),
    st.binary(max_size=60).filter(lambda b: b"\n" not in b),  # anything a program may write
    st.sampled_from([b"NaN", b'{"x": Infinity}', b"[]", b'{"a": {"b": 1e999}}', b"{" * 5000]),
    st.just(b"x" * (MAX_PROGRESS_LINE + 10)),  # longer than a line may be
)


@settings(max_examples=60, deadline=None)
@given(lines=st.lists(LINES, max_size=12), cuts=st.lists(st.integers(0, 200_000), max_size=8))
def test_any_cut_of_any_lines_reads_the_same(lines: list[bytes], cuts: list[int]) -> None:
    data = b"".join(line + b"\n" for line in lines) + b'{"fraction": 0.25'  # a line in progress
    whole = ProgressParser()
    expected = whole.feed(data)
    split = ProgressParser()
    got = []
    start = 0
    for cut in [*sorted({min(c, len(data)) for c in cuts}), len(data)]:
        got += split.feed(data[start:cut])
        start = cut
    assert got == expected
    assert split.skipped == whole.skipped
    assert split.consumed == whole.consumed == len(data) - len(b'{"fraction": 0.25')
    for value in got:
        assert isinstance(value, dict)
        json.dumps(value, allow_nan=False).encode("utf-8")  # what is kept can be answered


# a line far longer than a line may be, so that a cut falls inside what was dropped of it
LONG = st.just(b"x" * (MAX_PROGRESS_LINE * 3))


@settings(max_examples=80, deadline=None)
@given(
    lines=st.lists(st.one_of(LINES, LONG), max_size=8),
    cut=st.integers(0, 4 * MAX_PROGRESS_LINE),
)
def test_a_parser_resumed_from_a_resume_point_reads_on_alike(lines: list[bytes], cut: int) -> None:
    """A run read while nobody watches it gets a new parser, from the resume point stored
    with the count (streams/hub.py): an oversized line cut there was counted twice."""
    data = b"".join(line + b"\n" for line in lines)
    whole = ProgressParser()
    expected = whole.feed(data)
    first = ProgressParser()
    got = first.feed(data[: min(cut, len(data))])
    resumed = ProgressParser(consumed=first.consumed)
    got += resumed.feed(data[first.consumed :])
    assert got == expected
    assert first.skipped + resumed.skipped == whole.skipped
