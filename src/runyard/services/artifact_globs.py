"""A job's `artifacts` globs, matched in time linear in the path: `*` and `?` within one
component, `**` across them (`**/` for any directories or none, `**` elsewhere any text).

They were translated to one regular expression each (`*` as `[^/]*`, `**` as `.*`), which
Python's `re` matches by backtracking: `outputs/*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b` against a
file name of forty a's took exponential time on a thread that never let the GIL go, and the
whole server froze — `/health/live` unanswered, SIGTERM unheard (a probe; the file names are
the program's, often from its params). Now a component's stars are placed greedily, leftmost
first, each piece between two of them found once (`str`/fixed-length searches), and `**`
components are a set of positions moved along the path's components. A `**` glued to other
text in its component (`**.png`, `a**b`), rare, takes an automaton over the path's
characters: its set of positions in the pattern, moved one character at a time.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache

Matcher = Callable[[str], bool]
ANY = "**"


@lru_cache(maxsize=256)
def compiled(pattern: str) -> Matcher:
    """The matcher of a whole path (components joined by `/`) for `pattern`."""
    parts = pattern.split("/")
    last = parts[-1]
    if last.startswith(ANY) and last != ANY and ANY not in last[2:]:
        # `**.png` is `**/*.png`: what follows the stars has no slash, so it all lies in
        # the last component, and the stars take the directories and that component's start
        parts[-1:] = [ANY, "*" + last[2:]]
    if any(ANY in part and part != ANY for part in parts):
        return _Characters(pattern).match
    return _Components(parts).match


@lru_cache(maxsize=1024)
def component(pattern: str) -> Matcher:
    """The matcher of one component (no `/`) for a pattern component without `**`."""
    if "*" not in pattern and "?" not in pattern:
        return pattern.__eq__
    pieces = [_Piece(text) for text in pattern.split("*")]
    if len(pieces) == 1:
        whole = pieces[0]
        return lambda name: len(name) == whole.size and whole.at(name, 0)
    first, *middle, last = pieces

    def match(name: str) -> bool:
        end = len(name) - last.size  # where the last piece must start
        if end < first.size or not first.at(name, 0) or not last.at(name, end):
            return False
        at = first.size
        for piece in middle:  # the leftmost place of each leaves the most room for the next
            found = piece.find(name, at, end)
            if found < 0:
                return False
            at = found + piece.size
        return True

    return match


class _Piece:
    """The text between two stars: its characters, `?` any one. Fixed-length, so it is
    found in one pass (str.find, or a regular expression without any quantifier)."""

    def __init__(self, text: str) -> None:
        self.text, self.size = text, len(text)
        spelled = "".join("." if ch == "?" else re.escape(ch) for ch in text)
        self.wild = re.compile(spelled, re.S) if "?" in text else None

    def at(self, name: str, start: int) -> bool:
        if self.wild is None:
            return name.startswith(self.text, start)
        return self.wild.match(name, start) is not None

    def find(self, name: str, start: int, end: int) -> int:
        if self.wild is None:
            return name.find(self.text, start, end)
        found = self.wild.search(name, start, end)
        return -1 if found is None else found.start()


class _Components:
    """`**` components among components matched one by one. No `**`: component for
    component; one: those before it at the start, those after it at the end; more: the
    positions in the pattern reachable after each component. A last `**` takes one
    component or more (`a/**` never matched `a` itself, as `a/.*` did not)."""

    def __init__(self, parts: list[str]) -> None:
        self.parts = parts
        self.matchers = [None if part == ANY else component(part) for part in parts]
        stars = [i for i, matcher in enumerate(self.matchers) if matcher is None]
        self.several = len(stars) > 1
        star = stars[0] if stars else len(parts)
        self.head: list[Matcher] = [m for m in self.matchers[:star] if m is not None]
        self.tail: list[Matcher] = [m for m in self.matchers[star + 1 :] if m is not None]
        # the fewest components a path has: a `**` takes none, a last one one or more
        self.least = len(parts) - 1 if self.tail else len(parts)
        self.exact = not stars

    def match(self, path: str) -> bool:
        if self.several:
            return self._among(path.split("/"))
        names = path.split("/")
        if self.exact:
            if len(names) != len(self.head):
                return False
        elif len(names) < self.least:
            return False
        for matcher, name in zip(self.head, names, strict=False):
            if not matcher(name):
                return False
        at = len(names) - len(self.tail)
        for matcher in self.tail:
            if not matcher(names[at]):
                return False
            at += 1
        return True

    def _among(self, names: list[str]) -> bool:
        """Several `**`: the positions in the pattern reachable after each component."""
        last = len(self.parts)
        states = self._closure({0})
        for name in names:
            moved: set[int] = set()
            for i in states:
                if i == last:
                    continue
                matcher = self.matchers[i]
                if matcher is None:
                    moved.add(i)  # `**` takes this component and may take more
                    if i == last - 1:
                        moved.add(last)
                elif matcher(name):
                    moved.add(i + 1)
            if not moved:
                return False
            states = self._closure(moved)
        return last in states

    def _closure(self, states: set[int]) -> set[int]:
        """A `**` that is not the last may also take no component at all."""
        out = set(states)
        todo = list(states)
        while todo:
            i = todo.pop()
            if i < len(self.parts) - 1 and self.matchers[i] is None and i + 1 not in out:
                out.add(i + 1)
                todo.append(i + 1)
        return out


class _Characters:
    """The pattern as tokens over characters, its set of positions moved one character at a
    time: the same language as the regular expression it replaced (`**/` optional
    directories, `**` any text, `*` and `?` no `/`), in len(path) x len(pattern) steps."""

    def __init__(self, pattern: str) -> None:
        # (kind, character): "c" a literal, "?" one non-slash, "*" non-slashes, "**" any text,
        # "**/" any text ending in a slash, or nothing
        self.tokens: list[tuple[str, str]] = []
        i = 0
        while i < len(pattern):
            for kind in ("**/", "**", "*", "?"):
                if pattern.startswith(kind, i):
                    self.tokens.append((kind, ""))
                    i += len(kind)
                    break
            else:
                self.tokens.append(("c", pattern[i]))
                i += 1

    def match(self, path: str) -> bool:
        end = len(self.tokens)
        # a position is (token, inside): inside a "**/" that has taken text, which must end
        # with its slash before the next token
        states = self._closure({(0, False)})
        for ch in path:
            moved = {after for i, _ in states if i < end for after in self._after(i, ch)}
            if not moved:
                return False
            states = self._closure(moved)
        return (end, False) in states

    def _after(self, i: int, ch: str) -> tuple[tuple[int, bool], ...]:
        """Where token `i` goes on taking `ch`."""
        kind, literal = self.tokens[i]
        if kind == "c":
            return ((i + 1, False),) if ch == literal else ()
        if kind == "?":
            return ((i + 1, False),) if ch != "/" else ()
        if kind == "*":
            return ((i, False),) if ch != "/" else ()
        if kind == "**":
            return ((i, False),)
        # "**/": text, and at a slash it may end
        return ((i, True), (i + 1, False)) if ch == "/" else ((i, True),)

    def _closure(self, states: set[tuple[int, bool]]) -> set[tuple[int, bool]]:
        """Stars may take nothing; `**/` may take nothing only before it has taken text."""
        out = set(states)
        todo = list(states)
        while todo:
            i, inside = todo.pop()
            starred = i < len(self.tokens) and self.tokens[i][0] in ("*", "**", "**/")
            if starred and not inside and (i + 1, False) not in out:
                out.add((i + 1, False))
                todo.append((i + 1, False))
        return out
