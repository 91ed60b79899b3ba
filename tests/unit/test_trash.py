"""The trash of runs being deleted (`runs/.deleting`): a file in its place is readiness's to
name (data_dir.py); the retention sweep that empties the trash first goes on past it."""

from __future__ import annotations

from pathlib import Path

from runyard.services.removal import _empty


def test_a_file_where_the_trash_belongs_leaves_the_sweep_going_on(tmp_path: Path) -> None:
    """A probe: it raised NotADirectoryError out of every retention sweep (its first step), so
    no expired run was ever deleted again."""
    trash = tmp_path / ".deleting"
    trash.write_text("in the way")
    assert _empty(trash, frozenset()) == 0
    assert trash.read_text() == "in the way"  # left for whoever put it there


def test_the_trash_is_emptied_but_for_what_is_skipped(tmp_path: Path) -> None:
    trash = tmp_path / ".deleting"
    (trash / "a" / "deep").mkdir(parents=True)
    (trash / "a" / "deep" / "f").write_text("x")
    (trash / "b").mkdir()
    assert _empty(trash, frozenset({"b"})) == 0
    assert [p.name for p in trash.iterdir()] == ["b"]
