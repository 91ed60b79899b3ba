"""The trash of runs being deleted (`runs/.deleting`): a file in its place is readiness's to
name (data_dir.py); the retention sweep that empties the trash first goes on past it."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import pytest

from runyard import fstree, tree_removal
from runyard.services import removal
from runyard.services.removal import Removal, _empty


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


def test_a_tree_another_remover_empties_meanwhile_is_removed_without_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A probe: a run's delete and a retention pass emptied the same set-aside tree at once;
    the second to reach a directory the first had removed raised ENOENT and logged files
    left in the trash (`run_files_left_in_trash`, `trash_not_emptied`) that were gone."""
    tree = tmp_path / "tree"
    for sub in ("a/deep", "b/deep", "c"):
        (tree / sub).mkdir(parents=True)
        (tree / sub / "f").write_text("x")
    listed = tree_removal._clear_files

    def raced(cursor: fstree.DirCursor, *args: Any) -> Any:
        found = listed(cursor, *args)
        if "a" in found.pending:  # the other remover takes a subtree, then the rest
            shutil.rmtree(tree / "a")
            shutil.rmtree(tree / "b" / "deep")
        return found

    monkeypatch.setattr(tree_removal, "_clear_files", raced)
    tree_removal.remove_tree(tree)
    assert not tree.exists()
    shutil.rmtree(tmp_path)  # and one whose whole tree went before it began
    tree_removal.remove_tree(tree)


def test_a_delete_keeps_its_files_from_the_trash_sweep_until_it_has_removed_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The delete's own removal of its set-aside files and a retention pass's sweep of the
    trash raced for the same tree: the run stays under way until its files are gone."""

    class Paths:
        def __init__(self, root: Path) -> None:
            self.root = root

    class Executor:
        def paths(self, run_id: str) -> Paths:
            return Paths(tmp_path / "runs" / run_id)

    class Store:
        async def delete_run(self, run_id: str) -> bool:
            return True

    (tmp_path / "runs" / "R1" / "outputs").mkdir(parents=True)
    removal_ = Removal(Store(), Executor())  # type: ignore[arg-type]
    seen: list[bool] = []
    discard = removal._discard

    def watched(aside: Path, run_id: str) -> None:
        seen.append(run_id in removal_._under_way)
        discard(aside, run_id)

    monkeypatch.setattr(removal, "_discard", watched)
    assert asyncio.run(removal_.delete("R1")) is True
    assert seen == [True]
    assert not (tmp_path / "runs" / "R1").exists()
    assert list((tmp_path / "runs" / ".deleting").iterdir()) == []
