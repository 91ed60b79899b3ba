"""No bound of an artifact listing leaves a declared file out in silence (a tester's finding: a
directory of 120,000 files with `artifact_walk_max` at 100,000 listed 100,000 of them, the
rest scattered through it in readdir order, on pages that all said `partial` and named
nothing; no cursor ever reached the 20,000). A directory read in part is named, with the
bound and its setting, on every page that reads it; a page is partial exactly when it names
something; and a page that ends at a mount point names it, since the next does not."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from runyard.client_downloads import LeftOut
from runyard.schemas import ArtifactList, SkippedArtifact
from runyard.services.artifact_listing import ArtifactPage, decode_cursor, list_page
from tests.mounting import bind, mounts_undone, victim_tree

CAP = 10


def _pages(workspace: Path, patterns: list[str], limit: int, walk_max: int) -> list[ArtifactPage]:
    pages: list[ArtifactPage] = []
    after = None
    for _ in range(1000):
        page = list_page(workspace, patterns, after=after, limit=limit, walk_max=walk_max)
        pages.append(page)
        if page.next_cursor is None:
            return pages
        after = decode_cursor(page.next_cursor)
    raise AssertionError("the cursor never reached the end")


def _skipped(page: ArtifactPage) -> dict[str, str]:
    return {s.path: s.reason for s in page.skipped}


@pytest.fixture
def crowded(tmp_path: Path) -> Path:
    """outputs/many holds three times what a listing reads of a directory."""
    many = tmp_path / "ws" / "outputs" / "many"
    many.mkdir(parents=True)
    for i in range(3 * CAP):
        (many / f"f{i:02}.txt").write_text("x")
    (tmp_path / "ws" / "outputs" / "ok.txt").write_text("ok")
    return tmp_path / "ws"


@pytest.mark.parametrize("limit", [1, 4, 1000])
def test_a_directory_read_in_part_is_named_on_every_page_that_reads_it(
    crowded: Path, limit: int
) -> None:
    pages = _pages(crowded, ["outputs/**"], limit=limit, walk_max=CAP)
    listed = [a.path for page in pages for a in page.artifacts]
    assert listed == sorted(set(listed), key=lambda p: p.split("/"))  # name order, no repeat
    held_back = {f"outputs/many/f{i:02}.txt" for i in range(3 * CAP)} - set(listed)
    assert len(held_back) == 2 * CAP  # still bounded: the walk reads CAP of a directory
    for page in pages:
        assert page.partial is bool(page.skipped)  # partial says why, on every page
        if any(a.path.startswith("outputs/many/") for a in page.artifacts):
            reason = _skipped(page)["outputs/many"]
            assert f"more than {CAP} entries" in reason
            assert "RUNYARD_ARTIFACT_WALK_MAX" in reason
    assert "outputs/ok.txt" in listed


def test_the_workspace_itself_read_in_part_is_named_unless_what_is_declared_was_read(
    tmp_path: Path,
) -> None:
    """Which entries a directory read in part gives is the file system's order: `outputs` may
    be among them or not. Either it is listed, or the workspace (".") is named: never
    neither. Under `**`, anything unread could be declared: "." is always named."""
    for i in range(CAP):
        (tmp_path / f"scratch{i}").write_text("x")
    (tmp_path / "outputs").mkdir()
    (tmp_path / "outputs" / "a.txt").write_text("a")
    pages = _pages(tmp_path, ["outputs/**"], limit=100, walk_max=CAP)
    listed = [a.path for page in pages for a in page.artifacts]
    assert (listed == ["outputs/a.txt"]) is not any("." in _skipped(page) for page in pages)
    assert all(page.partial is bool(page.skipped) for page in pages)
    everything = _pages(tmp_path, ["**"], limit=100, walk_max=CAP)
    assert all("." in _skipped(page) for page in everything)
    assert "RUNYARD_ARTIFACT_WALK_MAX" in _skipped(everything[0])["."]


@pytest.mark.parametrize(
    ("pattern", "named"),
    [
        ("outputs/*.txt", False),  # `*` stays within outputs/: nothing under many is declared
        ("outputs/ok.txt", False),
        ("outputs/many/*.txt", True),
        ("outputs/*/f*.txt", True),
        ("**/*.txt", True),
    ],
)
def test_only_a_directory_that_could_hold_a_declared_entry_unread_is_named(
    crowded: Path, pattern: str, named: bool
) -> None:
    pages = _pages(crowded, [pattern], limit=1000, walk_max=CAP)
    assert any("outputs/many" in _skipped(page) for page in pages) is named
    assert all(page.partial is bool(page.skipped) for page in pages)


def test_a_literal_name_under_a_directory_read_in_part_is_listed_or_the_directory_named(
    crowded: Path,
) -> None:
    pages = _pages(crowded, ["outputs/many/f07.txt"], limit=1000, walk_max=CAP)
    listed = [a.path for page in pages for a in page.artifacts]
    named = any("outputs/many" in _skipped(page) for page in pages)
    assert (listed == ["outputs/many/f07.txt"]) is not named
    assert all(page.partial is bool(page.skipped) for page in pages)  # read whole: not partial


@pytest.fixture
def mounted(tmp_path: Path) -> Iterator[Path]:
    """A workspace whose outputs/m a bind mount covers, beside outputs/ok.txt."""
    with mounts_undone(tmp_path):
        outputs = tmp_path / "ws" / "outputs"
        (outputs / "m").mkdir(parents=True)
        (outputs / "ok.txt").write_text("ours\n")
        bind(victim_tree(tmp_path / "victim"), outputs / "m")
        yield tmp_path / "ws"


def test_a_page_that_ends_at_a_mount_point_names_it(mounted: Path) -> None:
    """With a walk of 2 the first page walks outputs and outputs/m and ends there, before
    entering it; the next, resumed at it, took it for named by the one before."""
    pages = _pages(mounted, ["**"], limit=100, walk_max=2)
    assert pages[0].next_cursor is not None
    assert decode_cursor(pages[0].next_cursor) == ("outputs", "m")
    named = [s.path for page in pages for s in page.skipped]
    assert named == ["outputs/m"]  # once, and on the page that ended there
    assert "mount point" in _skipped(pages[0])["outputs/m"]
    assert [a.path for page in pages for a in page.artifacts] == ["outputs/ok.txt"]


def _answer(partial: bool, *skipped: str, omitted: int = 0) -> ArtifactList:
    return ArtifactList(
        artifacts=[],
        partial=partial,
        skipped=[SkippedArtifact(path=p, reason="why") for p in skipped],
        skipped_omitted=omitted,
    )


def test_what_a_listing_left_out_is_gathered_once_over_its_pages() -> None:
    left_out = LeftOut()
    left_out.add(_answer(True))  # the first page's bare `partial`: maybe workspace_bytes only
    assert not left_out
    for _ in range(3):  # a directory read in part, named on every page that reads it
        left_out.add(_answer(True, "outputs/many"))
    assert list(left_out.named) == [("outputs/many", "why")]
    assert left_out.summary() == "1 entry (its `skipped`)"
    left_out.add(_answer(True, omitted=5))
    left_out.add(_answer(True))  # a later page partial and naming nothing: an older server
    assert (left_out.omitted, left_out.unexplained) == (5, 1)
    assert left_out.summary() == "6 entries (its `skipped`) and what 1 of its pages said " \
        "`partial` of, unnamed"  # fmt: skip
