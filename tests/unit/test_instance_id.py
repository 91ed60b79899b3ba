"""A server's instance id in its data directory (data_dir.instance_of): made once, kept, and
never left empty. A probe: a crash or a full disk between the file's creation and its write
left it empty, read as "unknown" at every start after, an id every such server shared."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from runyard.data_dir import INSTANCE_FILE, instance_of


def test_made_once_and_kept(tmp_path: Path) -> None:
    made = instance_of(tmp_path)
    assert re.fullmatch(r"[0-9a-f]{32}", made)
    assert instance_of(tmp_path) == made
    assert (tmp_path / INSTANCE_FILE).read_text() == made
    assert sorted(p.name for p in tmp_path.iterdir()) == [INSTANCE_FILE]  # no temporary left


def test_an_empty_or_damaged_one_is_replaced(tmp_path: Path) -> None:
    for damaged in (b"", b"\n", b"\x00\x00\x00", "é".encode()):
        (tmp_path / INSTANCE_FILE).write_bytes(damaged)
        made = instance_of(tmp_path)
        assert re.fullmatch(r"[0-9a-f]{32}", made), damaged
        assert made != "unknown"
        assert instance_of(tmp_path) == made
    assert sorted(p.name for p in tmp_path.iterdir()) == [INSTANCE_FILE]


def test_a_name_an_operator_gave_is_kept(tmp_path: Path) -> None:
    (tmp_path / INSTANCE_FILE).write_text("node-7.eu\n")
    assert instance_of(tmp_path) == "node-7.eu"


def test_two_data_directories_differ(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert instance_of(tmp_path / "a") != instance_of(tmp_path / "b")


def test_made_whole_where_hard_links_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Some file systems (vfat, some FUSE) refuse link(2): the id is still made, whole."""

    def refused(self: Path, target: Path) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(Path, "hardlink_to", refused)
    made = instance_of(tmp_path)
    assert re.fullmatch(r"[0-9a-f]{32}", made)
    assert instance_of(tmp_path) == made
    assert sorted(p.name for p in tmp_path.iterdir()) == [INSTANCE_FILE]
