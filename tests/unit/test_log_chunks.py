"""Log bytes cut into stream pieces (streams/chunks.py): whole, bounded, cut after a newline
where there is one, never inside a UTF-8 character; one piece at a time."""

from __future__ import annotations

import types

import pytest

from runyard.streams.chunks import split_chunks


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"short\n",
        b"line\n" * 10_000,  # many newlines: each piece ends with one
        "é€😀".encode() * 5_000,  # no newline, multibyte characters across every cut
        b"x" * 40_000 + b"\n" + "😀".encode() * 3_000 + b"tail",
    ],
    ids=["empty", "short", "lines", "characters", "mixed"],
)
def test_pieces_are_the_data_bounded_and_whole_characters(data: bytes) -> None:
    pieces = list(split_chunks(data, 1000))
    assert b"".join(pieces) == data
    assert all(0 < len(p) <= 1000 for p in pieces)
    for piece in pieces:
        piece.decode("utf-8")  # never a character cut in two
    if b"\n" in data[:1000] and len(data) > 1000:
        assert pieces[0].endswith(b"\n")


def test_pieces_come_one_at_a_time() -> None:
    """A watcher that stops reading holds the piece it is on, not every piece of the read."""
    pieces = split_chunks(b"a\n" * 100_000, 1000)
    assert isinstance(pieces, types.GeneratorType)
    assert len(next(pieces)) <= 1000
