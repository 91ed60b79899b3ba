"""What the head of a form's part may say: one thing to every reader (multipart_submit.py)."""

from __future__ import annotations

from runyard.errors import RunyardError


class BadMultipartError(RunyardError):
    status, title, slug = 400, "Bad multipart body", "bad-multipart"


TWICE = "\0twice"  # a part's headers: the first header it gives more than once
_IDENTITY = (b"", b"binary", b"8bit", b"7bit")  # a Content-Transfer-Encoding that changes nothing


def plain_part(headers: dict[str, bytes]) -> None:
    """A part's head says one thing to every reader: no header twice, no parameter of its
    Content-Disposition twice or in the extended form (`filename*`, which RFC 7578 4.2 rules
    out and some readers prefer), and no encoding of its body (a reader that decodes base64
    or gzip and one that does not would hold different files). A probe: `name="x"; name="run"`
    was the run, the other way round no run; a base64 part was stored as its text."""
    if TWICE in headers:
        raise BadMultipartError(
            f"a part gives its {headers[TWICE].decode('latin-1')[:64]!r} header twice: "
            "which one counts is a guess every reader makes its own way"
        )
    if headers.get("content-transfer-encoding", b"").strip().lower() not in _IDENTITY:
        raise BadMultipartError(
            "a part has a Content-Transfer-Encoding: a form's parts are sent as they are "
            "(RFC 7578 4.7), never decoded here"
        )
    if "content-encoding" in headers:
        raise BadMultipartError("a part has a Content-Encoding: its bytes are never decoded here")
    keys = [k.lower() for k in _param_keys(headers.get("content-disposition", b""))]
    for key in keys:
        if "*" in key:
            raise BadMultipartError(
                f"a part's Content-Disposition has {key[:64]!r}: the extended form is not used "
                "in a form (RFC 7578 4.2), and readers differ on which name counts"
            )
        if keys.count(key) > 1:
            raise BadMultipartError(
                f"a part's Content-Disposition gives {key[:64]!r} twice: which one counts is a "
                "guess every reader makes its own way"
            )


def _param_keys(value: bytes) -> list[str]:
    """The parameter names of a header such as `form-data; name="a;b"; filename="x"`: split
    at each `;` outside a quoted string (where a backslash escapes the next character)."""
    keys: list[str] = []
    quoted = escaped = False
    start = 0
    text = value.decode("latin-1")
    for at, char in enumerate(text + ";"):
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == ";" and not quoted:
            if start:  # the first segment is the disposition itself
                keys.append(text[start:at].partition("=")[0].strip())
            start = at + 1
    return keys
