"""Artifact path checks and the open-time walk that never follows a link."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runyard.errors import ForbiddenPathError, NotFoundError
from runyard.services.artifacts import check_relative, list_artifacts, matches, open_artifact


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
    found = [a.path for a in list_artifacts(workspace, ["outputs/**"])]
    assert found == ["outputs/a.txt", "outputs/sub/b.txt"]


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
