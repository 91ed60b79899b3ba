"""A chat agent for the tests: answers in two parts, the second once the gate file exists
($CHAT_GATE, else `go` in its workspace); exits 3 (after its first part) when asked to fail.
With --messages it takes the raw messages as JSON and writes its answer to a file."""

import json
import os
import sys
import time
from pathlib import Path

if sys.argv[1] == "--messages":
    messages = json.loads(sys.argv[2])
    out = Path(os.environ["RUNYARD_ARTIFACTS_DIR"])
    out.mkdir(parents=True, exist_ok=True)
    sys.stdout.write("this log is not the answer\n")
    (out / "answer.txt").write_text(" | ".join(f"{m['role']}={m['content']}" for m in messages))
    sys.exit(0)

last = sys.argv[1].rsplit("\n\n", 1)[-1]
sys.stdout.write("part one\n")
sys.stdout.flush()
if "please fail" in last:
    sys.exit(3)
gate = Path(os.environ.get("CHAT_GATE", "go"))
while not gate.exists():
    time.sleep(0.01)
sys.stdout.write(f"part two: {last}\n")
