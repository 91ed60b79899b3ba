"""Real mounts for the tests of runs' trees that must not cross one: made with mount(8), which
takes root (skipped with the reason otherwise), and every mount under a test's directory
detached afterwards, whoever made it (a test's program, a server left mid-way), deepest
first: pytest's own clean-up of old temporary directories would cross one that was left."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

OTHER_FILE_SYSTEM = Path("/dev/shm")  # a tmpfs on Linux: another st_dev than the tests' disk


def bind(source: Path, target: Path) -> None:
    subprocess.run(["mount", "--bind", str(source), str(target)], check=True)


def mounts_under(top: Path) -> list[str]:
    """Mount points at or under `top`, from /proc/self/mountinfo (read to its end)."""
    found = []
    prefix = str(top.resolve())
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")  # \040 for a space
        if point == prefix or point.startswith(prefix + "/"):
            found.append(point)
    return found


def detach_all(top: Path) -> None:
    """Deepest first, and again while any is left: one over a directory hides those under it
    until it is gone."""
    for _ in range(8):
        points = mounts_under(top)
        if not points:
            return
        for point in sorted(points, key=len, reverse=True):
            subprocess.run(["umount", "-l", point], check=False, capture_output=True)


@contextlib.contextmanager
def mounts_undone(top: Path) -> Iterator[None]:
    """Skips unless a bind mount can be made here; detaches every mount under `top` after."""
    if os.geteuid() != 0:
        pytest.skip("mount(8) takes root: these tests mount a victim directory into a run's tree")
    probe, target = top / "mount-probe", top / "mount-probe-target"
    probe.mkdir()
    target.mkdir()
    made = subprocess.run(
        ["mount", "--bind", str(probe), str(target)], check=False, capture_output=True
    )
    if made.returncode != 0:
        pytest.skip(f"mount --bind is not permitted here: {made.stderr.decode().strip()}")
    subprocess.run(["umount", str(target)], check=True)
    probe.rmdir()
    target.rmdir()
    try:
        yield
    finally:
        detach_all(top)


def victim_tree(where: Path) -> Path:
    """A directory outside every run, with a file at its top and one deeper."""
    (where / "sub").mkdir(parents=True)
    (where / "keep.txt").write_text("precious\n")
    (where / "sub" / "deep.txt").write_text("hidden-deep\n")
    return where


def victim_intact(where: Path) -> bool:
    return (where / "keep.txt").read_text() == "precious\n" and (
        where / "sub" / "deep.txt"
    ).read_text() == "hidden-deep\n"
