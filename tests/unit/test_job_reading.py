"""A job file's text is bounded before tomllib parses it: what would cost the parser its
stack or minutes of CPU is a load error at once, and what only looks deep (brackets and dots
inside strings and comments) is not."""

from __future__ import annotations

from pathlib import Path

import pytest

from runyard.jobs.spec import LoadError, load_job

TRUE = 'command = ["true"]\n'


def refused(tmp_path: Path, raw: bytes) -> str:
    path = tmp_path / "bad.toml"
    path.write_bytes(raw)
    with pytest.raises(LoadError) as info:
        load_job(path)
    return info.value.message


@pytest.mark.parametrize(
    ("text", "words"),
    [
        # tomllib takes time quadratic in a dotted key's parts: 40 KB of them, ten seconds
        (TRUE + "x" + ".a" * 20_000 + " = 1\n", "a dotted key of more than 64 parts (at line 2)"),
        (TRUE + "[x" + ".a" * 20_000 + "]\n", "a dotted key of more than 64 parts (at line 2)"),
        # ...and recurses once per level of arrays and inline tables
        (TRUE + "x = " + "[" * 500 + "]" * 500 + "\n", "nested deeper than 64 levels (at line 2)"),
        # tables, keys and arrays that are each within the bound, but not together
        ("[a" + ".b" * 40 + "]\nc" + ".d" * 40 + " = 1\n", "nested deeper than 64 levels"),
        # an integer int() refuses to convert (ValueError, not a TOMLDecodeError)
        (TRUE + "max_attempts = " + "9" * 5000 + "\n", "not valid TOML: Exceeds the limit"),
    ],
)
def test_what_would_cost_the_parser_too_much_is_a_load_error(
    tmp_path: Path, text: str, words: str
) -> None:
    assert words in refused(tmp_path, text.encode())


def test_encoding_problems_say_what_is_wrong(tmp_path: Path) -> None:
    assert "byte order mark" in refused(tmp_path, b"\xef\xbb\xbf" + TRUE.encode())
    assert "not valid UTF-8: invalid start byte at byte 19" in refused(
        tmp_path, TRUE.encode() + b"\xff = 1\n"
    )


def test_what_only_looks_deep_loads(tmp_path: Path) -> None:
    """Brackets, quotes and dots in strings and comments are text, as tomllib reads them."""
    from runyard.jobs.reading import MAX_DEPTH, nesting_problem

    deep = "[" * 100
    text = (
        f'description = "{deep} {"a." * 100} \\" {deep}"  # {deep}\n'
        f"command = ['true', '{deep}', '''\n{deep}\n''', \"\"\"{deep}\\\"\"\"\"\"]\n"
        '"params"."k"."type" = "float"\nparams . k . default = 1.5\n'
        f"[params.j]\ntype = 'json'\nmax_depth = 30\ndefault = {'[' * 30}{']' * 30}\n"
    )
    path = tmp_path / "fine.toml"
    path.write_text(text)
    job = load_job(path)
    assert job.spec.command[1] == deep
    assert job.spec.params["k"].default == 1.5
    assert nesting_problem("x = " + "[" * (MAX_DEPTH - 1)) is None  # the bound itself is fine
    assert nesting_problem("x" + ".a" * (MAX_DEPTH - 1) + " = 1") is None
