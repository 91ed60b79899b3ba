"""Exit records made durable by the supervisor: written atomically, kept and retried while
the disk refuses them."""

from __future__ import annotations

import os
from collections.abc import Callable

from runyard import fastjson
from runyard.execution.diskwrites import say, write_exit_file
from runyard.execution.protocol import ExitRecord
from runyard.execution.shortages import shortage

# An exit file that could not be written for want of room is tried again this often. Any other
# refusal is the place's own (its program made a file of its run's directory, or a directory of
# its exit file's path): a record kept for it would hold the attempt as running.
REWRITE_EVERY_S = 1.0


class ExitFiles:
    """`write_errors` is the supervisor's (point -> why, reported by ping); `retry(key)` asks
    its loop to call `rewrite(key)` in REWRITE_EVERY_S."""

    def __init__(
        self, fsync: bool, write_errors: dict[str, str], retry: Callable[[str], None]
    ) -> None:
        self.fsync = fsync
        self.write_errors = write_errors
        self.retry = retry
        # Exit records whose file could not be written (full or failing disk), by key: kept
        # and retried, and listed as still running meanwhile, so nothing reads them as lost.
        self.unwritten: dict[str, tuple[str, ExitRecord]] = {}

    def write(self, path: str, record: ExitRecord) -> bool:
        """Write the exit file atomically. On failure (full or failing disk) the record is
        kept and written again every REWRITE_EVERY_S until it lands: the event tells a
        connected server at once, the file is what a later reconcile reads."""
        try:
            self._write(path, fastjson.dumps(record.to_dict()))
        except OSError as exc:
            if not shortage(exc):
                # told by the `exited` event to a server connected now; one that reconciles
                # later finds no file and ends the attempt lost
                say(f"cannot write exit file {path}, and will not retry: {exc}")
                self._forget(record.key)
                return False
            if record.key not in self.unwritten:
                why = f"cannot write exit file {path}: {exc}"
                self.write_errors["exit_file"] = why
                say(why)
                self.retry(record.key)
            self.unwritten[record.key] = (path, record)
            return False
        self._forget(record.key)
        return True

    def _write(self, path: str, data: bytes) -> None:
        try:
            write_exit_file(path, data, fsync=self.fsync)
        except FileNotFoundError:
            # its run's directory is gone (its program can remove it): the record needs one
            os.makedirs(os.path.dirname(path), exist_ok=True)  # noqa: PTH103, PTH120
            write_exit_file(path, data, fsync=self.fsync)

    def _forget(self, key: str) -> None:
        self.unwritten.pop(key, None)
        if not self.unwritten:
            self.write_errors.pop("exit_file", None)

    def rewrite(self, key: str) -> ExitRecord | None:
        """Try a kept record again: the record if it is written now (to be told again),
        None if it is not (retried later) or was not kept."""
        entry = self.unwritten.get(key)
        if entry is None:
            return None
        if self.write(*entry):
            say(f"exit file of {key} written after all")
            return entry[1]
        if key in self.unwritten:  # kept: the disk may take it later
            self.retry(key)
        return None
