"""A file param's value: `upload:ID`, or `upload:ID/NAME`, the upload's bytes under the name
this use gives them.

An upload is its bytes (the id is their sha256, stored once), and the name it was first sent
under stays with them: the same bytes sent again as `scores.csv` answered with the first
sender's `notes.txt`, and a `.csv` param refused them, or a program found them staged under a
name nobody asked it to read. The name belongs to the use: a run that names it is checked
(`accept`) and staged by it; one that does not gets the stored name, as before.
"""

from __future__ import annotations

PREFIX = "upload:"
ID = "[0-9a-f]{64}"
# what a stored name may hold (services/uploads/names.py makes one so): no separator, no
# control character nor a Windows-reserved one, no leading dot, no space at either end. The
# server also holds a name to that making (a format character, a name not in NFC: 422).
_NOT = '/\\\\<>:"|?*\\x00-\\x1f\\x7f'
NAME = f"[^{_NOT}. ]([^{_NOT}]{{0,253}}[^{_NOT} ])?"
PATTERN = f"^upload:{ID}(/{NAME})?$"  # a file param's value, in its JSON Schema


def split(tail: str) -> tuple[str, str | None]:
    """What follows `upload:` (`ID` or `ID/NAME`): the id and the name, if one is given."""
    upload_id, slash, name = tail.partition("/")
    return upload_id, (name if slash else None)


def upload_id(tail: str) -> str:
    return split(tail)[0]


def ref(upload_id: str, name: str) -> str:
    return f"{PREFIX}{upload_id}/{name}"
