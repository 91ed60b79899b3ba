"""The jobs directory's registry keeps its jobs through a passing fault."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from pathlib import Path

from runyard.jobs.registry import JobRegistry
from runyard.jobs.spec import LoadError

# Run apart: it uses up every descriptor of its process, as a leak on the server did.
OUT_OF_DESCRIPTORS = """
import os, resource, sys
from pathlib import Path
from runyard.jobs.registry import JobRegistry

registry = JobRegistry(Path(sys.argv[1]), refresh_s=0)
assert sorted(registry.scan().jobs) == ["a", "b"]
Path(sys.argv[1], "b.toml").write_text('command = ["false"]\\n')  # changed during the fault
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
held = []
try:
    while True:
        held.append(os.open("/dev/null", os.O_RDONLY))
except OSError:
    pass
snapshot = registry.scan()
for fd in held:
    os.close(fd)
print("DURING", sorted(snapshot.jobs), "|", sorted(snapshot.errors))
after = registry.scan()
print("AFTER", sorted(after.jobs), after.jobs["b"].spec.command)
"""


def test_a_failed_rescan_keeps_the_jobs(tmp_path: Path) -> None:
    """Out of descriptors, the rescan swapped in an empty registry: every submit then said
    the job was not declared."""
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    (jobs / "a.toml").write_text('command = ["true"]\n')
    (jobs / "b.toml").write_text('command = ["true"]\n')
    out = subprocess.run(
        [sys.executable, "-c", OUT_OF_DESCRIPTORS, str(jobs)],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.splitlines()  # fmt: skip
    during, after = (next(line for line in out if line.startswith(k)) for k in ("DURING", "AFTER"))
    assert during.startswith("DURING ['a', 'b'] |")  # both still declared, the fault reported
    assert str(jobs) in during
    assert after == "AFTER ['a', 'b'] ['false']"  # and the change is picked up once it passes


def test_a_jobs_directory_past_its_limit_loads_the_first_files_and_says_so(
    tmp_path: Path,
) -> None:
    """Every file was loaded and held, and looked at again at each rescan, however many."""
    from runyard.jobs.registry import JobRegistry

    jobs = tmp_path / "jobs"
    jobs.mkdir()
    for name in ("e", "a", "d", "b", "c"):
        (jobs / f"{name}.toml").write_text('command = ["true"]\n')
    (jobs / "notes.txt").write_text("not a job, not counted")
    registry = JobRegistry(jobs, refresh_s=0, max_files=3)
    snapshot = registry.scan()
    assert sorted(snapshot.jobs) == ["a", "b", "c"]  # the first by name, the same each scan
    (why,) = snapshot.errors.values()
    assert "2 job files were not loaded" in why and "at most 3" in why and "d.toml" in why
    (jobs / "a.toml").unlink()
    again = registry.scan()
    assert sorted(again.jobs) == ["b", "c", "d"] and "1 job files" in next(
        iter(again.errors.values())
    )
    (jobs / "b.toml").unlink()
    within = registry.scan()
    assert sorted(within.jobs) == ["c", "d", "e"] and within.errors == {}


def test_a_jobs_directory_gone_or_unreadable_declares_no_job_and_brings_none_back(
    tmp_path: Path,
) -> None:
    """A probe: the directory moved away declared no job, but a symlink loop put in its place
    (ELOOP, taken for a passing fault) brought back every job of the scan before."""
    from runyard.jobs.registry import JobRegistry

    jobs = tmp_path / "jobs"
    jobs.mkdir()
    (jobs / "good.toml").write_text('command = ["true"]\n')
    registry = JobRegistry(jobs, refresh_s=0)
    assert sorted(registry.scan().jobs) == ["good"]
    jobs.rename(tmp_path / "jobs.bak")
    gone = registry.scan()
    assert gone.jobs == {} and "No such file" in next(iter(gone.errors.values()))
    jobs.symlink_to("jobs")  # a loop
    looped = registry.scan()
    assert looped.jobs == {}
    assert "Too many levels of symbolic links" in next(iter(looped.errors.values()))
    jobs.unlink()
    (tmp_path / "jobs.bak").rename(jobs)
    assert sorted(registry.scan().jobs) == ["good"]


def test_lookups_during_a_rescan_are_answered_from_the_last_one(tmp_path: Path) -> None:
    """A probe: one rescan of slow files held every lookup (a submit waited 36 s)."""
    import asyncio

    asyncio.run(_lookups_during_a_rescan(tmp_path))


async def _lookups_during_a_rescan(tmp_path: Path) -> None:
    import asyncio
    import threading

    from runyard.jobs.registry import JobRegistry, JobSnapshot

    release, entered = threading.Event(), threading.Event()

    class Slow(JobRegistry):
        slow = False

        def scan(self) -> JobSnapshot:
            if self.slow:
                entered.set()
                release.wait(30)  # the slow files, held until the test has looked
            return super().scan()

    jobs = tmp_path / "jobs"
    jobs.mkdir()
    (jobs / "a.toml").write_text('command = ["true"]\n')
    registry = Slow(jobs, refresh_s=0)
    assert await registry.get("a") is not None  # the first scan: waited for, there is no other
    (jobs / "b.toml").write_text('command = ["true"]\n')
    registry.slow = True
    rescan = asyncio.create_task(registry.snapshot())
    assert await asyncio.to_thread(entered.wait, 5)
    assert await asyncio.wait_for(registry.get("a"), 5) is not None  # not behind the rescan
    new = asyncio.create_task(registry.get("b"))  # not in the last scan: waits for this one
    await asyncio.sleep(0.05)
    assert not new.done()
    release.set()
    assert "b" in (await rescan).jobs
    assert await new is not None


def test_a_job_file_rewritten_in_place_with_its_mtime_put_back_is_read_again(
    tmp_path: Path,
) -> None:
    """A probe: rewritten with the same size and its mtime restored (`cp -p`, tar, a restore
    of mtimes), the old job was served for good: only the inode's change time moved."""
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    path = jobs / "racer.toml"
    path.write_text('command = ["echo", "A"]\n')
    registry = JobRegistry(jobs, refresh_s=0)
    assert registry.scan().jobs["racer"].spec.command == ["echo", "A"]
    before = path.stat()
    with path.open("r+") as fh:  # the same inode, the same size
        fh.write('command = ["echo", "B"]\n')
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert registry.scan().jobs["racer"].spec.command == ["echo", "B"]


def test_a_broken_job_looked_at_again_keeps_no_earlier_failure(tmp_path: Path) -> None:
    """A probe: each failed load kept the one before it alive (its traceback's frame held
    `was`), with the file read and its models: RSS grew without bound for a job looked at
    at every scan (a `run_as` user that does not exist) and at every edit of a broken one."""
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    (jobs / "nouser.toml").write_text('command = ["true"]\nrun_as = "no-such-user-here"\n')
    edited = jobs / "edited.toml"
    registry = JobRegistry(jobs, refresh_s=0)
    gc.collect()
    before = sum(isinstance(o, LoadError) for o in gc.get_objects())  # other tests' own
    for i in range(40):
        edited.write_text(f'command = ["true"]\nunknown_{i} = 1\n')
        os.utime(edited, ns=(i * 10**9, i * 10**9))  # a new stamp each time: read again
        snapshot = registry.scan()
        assert sorted(snapshot.errors) == ["edited.toml", "nouser.toml"], snapshot.errors
    gc.collect()
    alive = sum(isinstance(o, LoadError) for o in gc.get_objects()) - before
    assert alive <= 2, alive  # the two files' last errors, and no chain of earlier ones


def test_a_file_of_many_mistakes_names_the_first_and_counts_the_rest(tmp_path: Path) -> None:
    """A probe: 250 KB of unknown keys made a load error of 1.1 MB, listed whole by every
    `GET /v1/jobs` and logged at each edit."""
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    keys = "".join(f"k{i} = 1\n" for i in range(300))
    (jobs / "many.toml").write_text(f'command = ["true"]\n{keys}')
    (jobs / "long.toml").write_text('command = ["true"]\n' + f"{'x' * 60_000} = 1\n")
    errors = JobRegistry(jobs, refresh_s=0).scan().errors
    assert errors["many.toml"].endswith("; and 290 more"), errors["many.toml"][-200:]
    assert errors["many.toml"].count("Extra inputs are not permitted") == 10
    assert len(errors["long.toml"]) <= 4000
