"""Artifact path checks and the open-time walk that never follows a link."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runyard.errors import ForbiddenPathError, NotFoundError
from runyard.services.artifact_listing import decode_cursor, list_page, workspace_usage
from runyard.services.artifacts import check_relative, matches, open_artifact


@pytest.mark.parametrize(
    "path", ["", "/etc/passwd", "../x", "a/../b", "a//b", "./a", "a/.", "a\\b", "a\0b", "a/"]
)
def test_check_relative_refuses(path: str) -> None:
    with pytest.raises(ForbiddenPathError):
        check_relative(path)


@pytest.mark.parametrize(
    ("path", "pattern", "expected"),
    [
        ("outputs/a.txt", "outputs/**", True),
        ("outputs/x/y/z.csv", "outputs/**", True),
        ("outputs.txt", "outputs/**", False),
        ("outputs/a.diff", "outputs/*.diff", True),
        ("outputs/sub/a.diff", "outputs/*.diff", False),
        ("a/b/c.png", "**/*.png", True),
        ("c.png", "**/*.png", True),
        ("result.json", "result.?son", True),
    ],
)
def test_glob_matching(path: str, pattern: str, expected: bool) -> None:
    assert matches(path, [pattern]) is expected


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    (ws / "outputs" / "sub").mkdir(parents=True)
    (ws / "outputs" / "a.txt").write_text("a")
    (ws / "outputs" / "sub" / "b.txt").write_text("b")
    (tmp_path / "secret").write_text("secret")
    (ws / "outputs" / "link").symlink_to(tmp_path / "secret")
    (ws / "outputs" / "dirlink").symlink_to(tmp_path)
    os.link(tmp_path / "secret", ws / "outputs" / "hard")
    return ws


def test_listing_skips_links(workspace: Path) -> None:
    page = list_page(workspace, ["outputs/**"], after=None, limit=100, walk_max=1000)
    assert [a.path for a in page.artifacts] == ["outputs/a.txt", "outputs/sub/b.txt"]
    assert page.next_cursor is None


def _all_pages(workspace: Path, limit: int, walk_max: int) -> list[str]:
    seen: list[str] = []
    after = None
    for _ in range(10_000):
        page = list_page(workspace, ["**"], after=after, limit=limit, walk_max=walk_max)
        seen += [a.path for a in page.artifacts]
        if page.next_cursor is None:
            return seen
        after = decode_cursor(page.next_cursor)
    raise AssertionError("the cursor never reached the end")


def test_pages_resume_after_the_cursor_without_gaps_or_repeats(tmp_path: Path) -> None:
    expected = []
    for d in ["a", "a/b", "a/b/c", "b", "c"]:
        (tmp_path / d).mkdir(parents=True, exist_ok=True)
        for f in ["1", "2", "3"]:
            (tmp_path / d / f).write_text(f)
            expected.append(f"{d}/{f}")
    for limit, walk_max in [(1, 1000), (2, 1000), (1000, 100), (4, 100)]:
        assert _all_pages(tmp_path, limit, walk_max) == sorted(expected, key=lambda p: p.split("/"))


def test_walk_budget_bounds_each_page_and_still_progresses(tmp_path: Path) -> None:
    for d in range(5):
        (tmp_path / f"d{d}").mkdir()
        for i in range(50):
            (tmp_path / f"d{d}" / f"f{i:03}").write_text("x")
    page = list_page(tmp_path, ["**"], after=None, limit=10_000, walk_max=100)
    assert 0 < len(page.artifacts) < 100
    assert page.next_cursor is not None
    assert len(_all_pages(tmp_path, 10_000, 100)) == 250


def test_a_directory_over_the_walk_cap_is_listed_in_part_and_says_so(tmp_path: Path) -> None:
    for i in range(250):
        (tmp_path / f"f{i:03}").write_text("x")
    page = list_page(tmp_path, ["**"], after=None, limit=10_000, walk_max=100)
    assert page.partial
    assert len(_all_pages(tmp_path, 10_000, 100)) == 100
    assert workspace_usage(tmp_path, 100)[1] is False


def _deep(root: Path, levels: int, name: str, leaf: str) -> None:
    """`levels` nested directories, made relative to each other (so past PATH_MAX too)."""
    root.mkdir()
    fd = os.open(root, os.O_RDONLY)
    for _ in range(levels):
        os.mkdir(name, dir_fd=fd)
        nxt = os.open(name, os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = nxt
    os.close(os.open(leaf, os.O_WRONLY | os.O_CREAT, dir_fd=fd))
    os.close(fd)


def test_very_deep_tree_is_listed_measured_and_removed(deep_trees: Path, tmp_path: Path) -> None:
    """1,200 levels: past Python's recursion limit; one branch also past PATH_MAX in total
    length, which no request could name, so it is measured and removed but not listed."""
    from runyard.tree_removal import remove_tree

    root = tmp_path / "deep"
    root.mkdir()
    _deep(root / "short", 1200, "d", "leaf.txt")  # 2,400 characters: requestable
    _deep(root / "long", 1200, "d" * 200, "far.txt")  # 241,000 characters: not
    page = list_page(root, ["**"], after=None, limit=10, walk_max=100_000)
    assert [(a.path.count("/"), a.path.rsplit("/", 1)[-1]) for a in page.artifacts] == [
        (1201, "leaf.txt")
    ]
    assert workspace_usage(root, 100_000)[1] is True
    remove_tree(root)
    assert not root.exists()


def test_sparse_file_counts_its_blocks_not_its_length(tmp_path: Path) -> None:
    with (tmp_path / "sparse").open("wb") as fh:
        fh.truncate(1 << 30)
    used, complete = workspace_usage(tmp_path, 1000)
    assert complete
    assert used < 1 << 20


def test_names_no_request_can_carry_are_not_listed(tmp_path: Path) -> None:
    """A newline (or any control character) cannot reach the server in a path: such a file
    was listed and then 404; it is left out, like a link."""
    for name in ["a\nb.txt", "tab\there", "del\x7f", "ok.txt"]:
        (tmp_path / name).write_text("x")
    page = list_page(tmp_path, ["**"], after=None, limit=10, walk_max=1000)
    assert [a.path for a in page.artifacts] == ["ok.txt"]


@pytest.mark.parametrize("cursor", ["", "!!", "Lg", "Li4", "YS8vYg"])
def test_bad_cursors_are_refused(cursor: str) -> None:
    from runyard.errors import InvalidInputError

    with pytest.raises(InvalidInputError):
        decode_cursor(cursor)


def test_open_reads_plain_files(workspace: Path) -> None:
    opened = open_artifact(workspace, "outputs/sub/b.txt", ["outputs/**"])
    try:
        assert os.read(opened.fd, 10) == b"b"
        assert opened.stat.st_size == 1
        assert opened.media_type == "text/plain"
    finally:
        os.close(opened.fd)


@pytest.mark.parametrize("path", ["outputs/link", "outputs/dirlink/secret", "outputs/hard"])
def test_open_refuses_links(workspace: Path, path: str) -> None:
    with pytest.raises(ForbiddenPathError):
        open_artifact(workspace, path, ["outputs/**"])


def test_open_refuses_undeclared_and_missing(workspace: Path) -> None:
    with pytest.raises(NotFoundError):
        open_artifact(workspace, "outputs/a.txt", ["results/**"])
    with pytest.raises(NotFoundError):
        open_artifact(workspace, "outputs/none.txt", ["outputs/**"])
