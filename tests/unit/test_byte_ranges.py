"""A Range header's positions are ASCII digits or the header is malformed (400): Starlette's
int() took `1_0` for 10, `+1` for 1 and Arabic-Indic digits for theirs (a probe). A range
written as RFC 9110 writes it is read as Starlette read it, but for a part past the end: it is
dropped, where Starlette refused the whole set for it (RFC 9110 14.1.1: a set is satisfiable
if one of its parts is)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.responses import FileResponse, MalformedRangeHeader, RangeNotSatisfiable

from runyard.api.byte_ranges import parse_byte_ranges

SIZE = 50

HOSTILE = [
    "bytes=1_0-20",  # int() reads underscores between digits
    "bytes=0-2_0",
    "bytes=+1-2",  # and a sign
    "bytes=1-+2",
    "bytes=--5",  # a negative suffix: was 416
    "bytes=1--2",
    "bytes=-+5",
    "bytes=\u0661-\u0663",  # Arabic-Indic 1-3
    "bytes=1-\U0001d7d1",  # MATHEMATICAL BOLD DIGIT THREE
    "bytes=\xa01-3",  # int() strips Unicode spaces (a no-break space)
    "bytes=1-3\x85",  # and NEL
    "bytes=1 -3",  # whitespace inside a range
    "bytes=1- 3",
    "bytes=1-2,x",  # a part it could not read was dropped, the rest served
    "bytes=1-2,-",
    "bytes=0x1-3",
    "bytes=1e0-3",
    "bytes=1.0-3",
    "bytes=5",
    "bytes=-",
    "bytes=",
    "bytes=,",
    "bytes=3-1",
    "bytes=99-1",  # ends before it begins: malformed, not unsatisfiable
    "bytes 1-3",
]


@pytest.mark.parametrize("header", HOSTILE)
def test_a_malformed_range_is_refused(header: str) -> None:
    with pytest.raises(MalformedRangeHeader):
        parse_byte_ranges(header, SIZE)


@pytest.mark.parametrize(
    ("header", "spans"),
    [
        ("bytes=1-3", [(1, 4)]),
        ("bytes=-5", [(45, 50)]),
        ("bytes=5-", [(5, 50)]),
        ("bytes=0-1, 4-5", [(0, 2), (4, 6)]),
        ("bytes=4-5,0-1,1-2", [(0, 3), (4, 6)]),  # sorted, overlaps merged
        ("bytes=0-1,,4-5", [(0, 2), (4, 6)]),  # an empty list element is skipped
        (" Bytes = 1-3 ", [(1, 4)]),
        ("bytes=0-" + "9" * 40, [(0, SIZE)]),  # a last past the end is the end
        ("bytes=-" + "9" * 40, [(0, SIZE)]),
        ("bytes=" + "0" * 5000 + "1-3", [(1, 4)]),  # zeros padding a small one, read cheaply
        ("bytes=" + ",".join(["0-0"] * 101), []),  # past 100 ranges: the whole file
        ("bytes=0-1,50-60", [(0, 2)]),  # a part past the end is dropped, the others served
        ("bytes=-0,40-,99-", [(40, 50)]),
        ("bytes=60-,0-1,-0,4-5", [(0, 2), (4, 6)]),
    ],
)
def test_a_range_as_written_reads_so(header: str, spans: list[tuple[int, int]]) -> None:
    assert parse_byte_ranges(header, SIZE) == spans


@pytest.mark.parametrize("header", ["bytes=50-", "bytes=99999999999999999999999-", "bytes=-0",
                                    "bytes=50-60,-0,51-"])  # fmt: skip
def test_a_start_past_the_end_is_unsatisfiable(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable):
        parse_byte_ranges(header, SIZE)


_POSITION = st.integers(0, 2 * SIZE).map(str)
_SPEC = st.one_of(
    st.tuples(st.integers(0, 2 * SIZE), st.integers(0, 2 * SIZE)).map(
        lambda p: f"{min(p)}-{max(p)}"
    ),
    _POSITION.map(lambda n: f"{n}-"),
    _POSITION.map(lambda n: f"-{n}"),
)


def _outcome(parse: object, header: str) -> object:
    try:
        return parse(header, SIZE)  # type: ignore[operator]
    except (MalformedRangeHeader, RangeNotSatisfiable) as exc:
        return type(exc)


def _starts_before_the_end(spec: str) -> bool:
    first, _, last = spec.partition("-")
    return int(first) < SIZE if first else int(last) > 0


@given(st.lists(_SPEC, min_size=1, max_size=5), st.sampled_from([",", ", "]))
def test_a_well_formed_range_reads_as_starlette_read_it(specs: list[str], sep: str) -> None:
    header = "bytes=" + sep.join(specs)
    satisfiable = [spec for spec in specs if _starts_before_the_end(spec)]
    expected = (
        _outcome(FileResponse._parse_range_header, "bytes=" + sep.join(satisfiable))
        if satisfiable
        else RangeNotSatisfiable
    )
    assert _outcome(parse_byte_ranges, header) == expected
