"""A run's file inputs, staged into its workspace before the program starts: each upload
copied (or hard-linked, where the program cannot change it) to `inputs/NAME/FILENAME`,
read-only. FILENAME is the one the run gave it (`upload:ID/FILENAME`), else the upload's."""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
from pathlib import Path
from typing import Any

from runyard import upload_refs
from runyard.execution.workspace import WorkspaceError
from runyard.regular_files import open_regular, read_json_object

INPUTS = "inputs"
# a hard link cannot be made (another filesystem, links refused, too many): copy instead
COPY_INSTEAD = frozenset({errno.EXDEV, errno.EPERM, errno.EMLINK})
FICLONE = 0x40049409  # Linux's ioctl for a copy-on-write clone (btrfs, XFS)
COPY_CHUNK = 1024 * 1024

META_MAX = 64 * 1024  # an upload's metadata (services/uploads/store.py): a few hundred bytes


def stage(
    uploads_dir: Path,
    workspace: Path,
    inputs: dict[str, str],
    where: dict[str, str] | None = None,
    *,
    link: bool = False,
) -> dict[str, dict[str, Any]]:
    """Blocking. `inputs`: param name -> `ID` or `ID/FILENAME` (services/launches.py);
    `where`: param name -> the path the job says it lands at, relative to the workspace.
    `link`: the program cannot change a file it does not own (it runs as another user, or
    sees its inputs read-only): a hard link to the stored upload does, else a copy (a clone
    where the filesystem can) — a program running as the server's own user could chmod a
    link and change the upload for every later run. Returns, per param, what the program is
    told of its file (path, size, sha256). WorkspaceError if an upload is gone, or if the
    place it would land leads out of the workspace (a symlink a workspace source or an
    earlier attempt left): staging runs as the server, never writes through a link."""
    staged: dict[str, dict[str, Any]] = {}
    for name, tail in inputs.items():
        upload_id, given = upload_refs.split(tail)
        blob = uploads_dir / upload_id
        try:  # as the uploads read it: never a FIFO waited on, nor a deep JSON
            meta = read_json_object(uploads_dir / f"{upload_id}.json", META_MAX)
        except (OSError, ValueError) as exc:
            raise WorkspaceError(f"input {name!r}: upload {upload_id} is gone ({exc})") from exc
        if where and name in where:  # a relative path of plain segments (jobs/params.py)
            target = workspace / where[name]
        else:  # a plain file name: the upload's was made one when stored, the run's checked
            file_name = given if given is not None else str(meta.get("name") or "upload")
            target = workspace / INPUTS / name / Path(file_name).name
        _folders(workspace, target.parent.relative_to(workspace).parts, name)
        # whatever is there (a workspace source's file, a symlink, an earlier attempt's link)
        # gives way: the program reads the upload, nothing else under its name
        try:
            target.unlink(missing_ok=True)
        except IsADirectoryError:  # a workspace source's folder: never emptied for a file
            raise WorkspaceError(
                f"input {name!r}: the workspace holds a folder at "
                f"{target.relative_to(workspace)}, where its file would land"
            ) from None
        if not link or not _linked(blob, target):
            _copy(blob, target)
            target.chmod(0o444)
        staged[name] = {"path": str(target), "size": meta.get("size"), "sha256": upload_id}
    return staged


def _linked(blob: Path, target: Path) -> bool:
    """A hard link, where one can be made (same filesystem, links allowed)."""
    try:
        os.link(blob, target)  # no copy, read-only as the upload is
    except OSError as exc:
        if exc.errno not in COPY_INSTEAD:
            raise
        return False
    return True


def _copy(source: Path, target: Path) -> None:
    """A clone (copy on write: instant, no space) where the filesystem makes one, else bytes
    copied by the kernel. The stored upload as a regular file, or an OSError: a FIFO put in
    its place was waited on for ever, by a thread of the server's pool."""
    fd, _ = open_regular(source)
    with os.fdopen(fd, "rb") as src, target.open("xb") as dst:
        try:
            fcntl.ioctl(dst.fileno(), FICLONE, src.fileno())
        except OSError:
            shutil.copyfileobj(src, dst, COPY_CHUNK)


def _folders(workspace: Path, parts: tuple[str, ...], name: str) -> None:
    """Make the folders down to where an input lands, refusing any that is a symlink: it
    could lead out of the workspace, and nothing is made or written before that is known."""
    workspace.mkdir(parents=True, exist_ok=True)  # runyard's own (an empty one is made here)
    here = workspace
    for part in parts:
        here = here / part
        if here.is_symlink():
            raise WorkspaceError(
                f"input {name!r}: {here} is a symlink; an input is never staged through one"
            )
        here.mkdir(exist_ok=True)
