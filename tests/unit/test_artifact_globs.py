"""Artifact globs: the same language as the regular expressions they replaced, matched in
time linear in the path (a probe froze the server with `*a*a*a…*b` and a name of a's)."""

from __future__ import annotations

import re
import threading

from hypothesis import given, settings
from hypothesis import strategies as st

from runyard.services.artifact_globs import compiled, component


def _as_regex(pattern: str) -> re.Pattern[str]:
    """The translation the matcher replaced (`*` `[^/]*`, `**/` `(?:.*/)?`, `**` `.*`)."""
    out, i = [], 0
    while i < len(pattern):
        for glob, regex in (("**/", "(?:.*/)?"), ("**", ".*"), ("*", "[^/]*"), ("?", "[^/]")):
            if pattern.startswith(glob, i):
                out.append(regex)
                i += len(glob)
                break
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z", re.DOTALL)


# small alphabets, so that stars, slashes and literals meet often
PATTERNS = st.text(alphabet="ab/*?.\n", max_size=9)
PATHS = st.text(alphabet="ab/.\n", max_size=9)


@settings(max_examples=3000, deadline=None)
@given(PATTERNS, PATHS)
def test_the_same_paths_match_as_with_the_regular_expression(pattern: str, path: str) -> None:
    assert compiled(pattern)(path) is (_as_regex(pattern).match(path) is not None)


@settings(max_examples=1000, deadline=None)
@given(st.text(alphabet="ab*?.", max_size=8), st.text(alphabet="ab.", max_size=10))
def test_a_component_matches_as_the_regular_expression(pattern: str, name: str) -> None:
    assert component(pattern)(name) is (_as_regex(pattern).match(name) is not None)


def test_patterns_that_backtracked_for_ever_answer_at_once() -> None:
    """Each took the regular expression seconds to years; here a path of 4096 characters is
    matched against each in one pass over it. A thread and a generous bound, so that a
    return to backtracking fails rather than hangs the suite."""
    cases = [
        ("outputs/" + "*a" * 14 + "*b", "outputs/" + "a" * 4000),
        ("**/*_*_*_*.csv", "d/" + "_" * 4000),
        ("outputs/**/**/**/*.png", "outputs/" + "x/" * 2000),
        ("**" + "a**" * 12 + "b", "a" * 4096),  # glued `**`: the automaton over characters
    ]
    answers: list[bool] = []

    def match_all() -> None:
        answers.extend(compiled(pattern)(path) for pattern, path in cases)

    worker = threading.Thread(target=match_all, daemon=True)
    worker.start()
    worker.join(timeout=60)
    assert answers == [False, False, False, False]
