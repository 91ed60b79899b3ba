"""Run `runyard` with an audit hook that records blocking work done on the event loop.

Any file open, directory change, process spawn or database connection raised on the thread
running the asyncio loop is written, with its stack, to $RUNYARD_LOOP_GUARD_FILE. Imports are
exempt (they open source files). Used by tests/e2e/test_event_loop.py.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import traceback

WATCHED = {
    "open", "os.mkdir", "os.rename", "os.replace", "os.remove", "os.rmdir", "os.scandir",
    "os.listdir", "os.chmod", "os.truncate", "os.link", "os.symlink", "shutil.rmtree",
    "shutil.copytree", "shutil.copyfile", "subprocess.Popen", "os.posix_spawn", "os.fork",
    "os.system", "sqlite3.connect",
}  # fmt: skip
_busy = threading.local()
_out = os.environ["RUNYARD_LOOP_GUARD_FILE"]


# FastAPI reads each endpoint's source once (for error context) and caches it per route:
# a one-time framework cost, not blocking work of ours.
EXEMPT_FUNCTIONS = {"_extract_endpoint_context"}


def _exempt() -> bool:
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True  # imports open and list files by nature
        if frame.f_code.co_name in EXEMPT_FUNCTIONS:
            return True
        frame = frame.f_back
    return False


def _hook(event: str, args: tuple[object, ...]) -> None:
    if event not in WATCHED or getattr(_busy, "on", False):
        return
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return  # not on a thread running the loop
    if event == "open" and not isinstance(args[0], str | bytes):
        return  # os.fdopen of a descriptor opened elsewhere
    if _exempt():
        return
    _busy.on = True
    try:
        stack = "".join(traceback.format_stack(limit=12)[:-1])
        with open(_out, "a") as fh:
            fh.write(f"=== {event} {args[:2]!r}\n{stack}\n")
    finally:
        _busy.on = False


sys.addaudithook(_hook)

if __name__ == "__main__":
    from runyard.cli.main import app

    sys.argv[0] = "runyard"
    app()
