"""A file's name for a run (`upload:ID/NAME`): whatever name an upload keeps is one a run can
give it back, and the ref's parts are read as written."""

from __future__ import annotations

import re

from hypothesis import example, given
from hypothesis import strategies as st

from runyard import upload_refs
from runyard.services.uploads.names import MAX_NAME, safe_name

REF = re.compile(upload_refs.PATTERN)
UPLOAD_ID = "ab" * 32
# what names are made of where they go wrong: dots, spaces of every kind, separators, format
# and private characters, and letters of one byte and of two
PIECES = st.sampled_from(
    [".", " ", "\u3000", "\u00a0", "/", "\\", "\u200b", "\ue000", "a", "\u00e9", ":", "x.csv"]
)
NAMES = st.lists(PIECES, max_size=300).map("".join)


@given(st.one_of(NAMES, st.text()))
@example(". x.csv")  # its dot went, then the space behind it stayed (a probe)
@example("a" * 254 + " " + "b" * 10)  # cut on a space
def test_a_kept_name_is_kept_as_it_is_and_a_ref_takes_it(name: str) -> None:
    kept = safe_name(name)
    assert safe_name(kept) == kept
    assert len(kept.encode()) <= MAX_NAME
    assert REF.fullmatch(upload_refs.ref(UPLOAD_ID, kept))


def test_the_parts_of_a_ref() -> None:
    assert upload_refs.split(UPLOAD_ID) == (UPLOAD_ID, None)
    assert upload_refs.split(f"{UPLOAD_ID}/scores.csv") == (UPLOAD_ID, "scores.csv")
    assert upload_refs.upload_id(f"{UPLOAD_ID}/a b.csv") == UPLOAD_ID
    for bad in ["/", "/.x", "/ x", "/x ", "/a/b", "/a\\b", "/a\x01", "/" + "y" * 256]:
        assert not REF.fullmatch(f"upload:{UPLOAD_ID}{bad}"), bad
