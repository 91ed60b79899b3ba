"""fastjson reads what json reads, exactly: orjson's shortcut never turns a long integer into
a float, wherever the integer stands."""

from __future__ import annotations

import json

import pytest

from runyard import fastjson

LONG = [
    "-9223372036854775809",  # 19 digits, one below the smallest 64-bit integer
    "18446744073709551616",  # 2**64: 20 digits
    "-98765432109876543210987",
    "[1, 2, 18446744073709551616]",  # 2**64, last in the text
    '{"a": {"b": [0.5, 123456789012345678901234567890]}}',
    '{"spec": {"kill_grace_s": 10.0, "n": -9999999999999999999}}',  # 19 digits, in a spec
]
SHORT = [
    "1234567890123456789",  # 19 digits, inside 64 bits: still exact either way
    '{"when": 1764588373.538098, "n": -922337203685477580}',
    '"a string 12345678901234567890123 is text, not a number"',
    "[0.1, 2.0, 300.0, 1e300]",
]


@pytest.mark.parametrize("text", LONG + SHORT)
def test_reads_every_number_as_json_does(text: str) -> None:
    expected = json.loads(text)
    for given in (text, text.encode()):
        got = fastjson.loads(given)
        assert got == expected
        assert json.dumps(got) == json.dumps(expected)  # an int stays an int, a float a float
