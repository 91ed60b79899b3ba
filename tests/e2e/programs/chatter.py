"""Writes a log with awkward content and progress lines both good and bad."""

import json
import os
import sys
import time
from pathlib import Path

lines = int(sys.argv[1])
if sys.argv[2] == "wait":
    while not Path("go").exists():
        time.sleep(0.01)
width = int(sys.argv[3]) if len(sys.argv) > 3 else 40
pause = float(sys.argv[4]) if len(sys.argv) > 4 else 0.001
out = sys.stdout.buffer
progress = Path(os.environ["RUNYARD_PROGRESS_FILE"]).open("ab")  # noqa: SIM115
for i in range(lines):
    out.write(f"line {i:06d} ".encode() + b"y" * width + b"\n")
    if i % 100 == 0:
        out.write(b"binary \xff\xfe\x00 and a carriage\rreturn \xe2\x82\xac\n")
        out.flush()
        good = {"fraction": i / lines, "message": f"line {i}"}
        progress.write(json.dumps(good).encode() + b"\n")
        progress.flush()
        time.sleep(pause)
out.write(b"L" * 50_000 + b"\n")
for bad in (b"not json\n", b"[1, 2, 3]\n", b"\xff\xfe{}\n", b'{"x": "' + b"z" * 200_000 + b'"}\n'):
    progress.write(bad)
progress.write(json.dumps({"fraction": 1.0, "message": "done"}).encode() + b"\n")
out.flush()
progress.close()
