"""An agent-style job: edits files in its git workspace and leaves the diff as an artifact."""

import argparse
import os
import subprocess
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", required=True)
    ap.add_argument("--file", required=True)
    args = ap.parse_args()

    target = Path(args.file)
    if target.is_absolute() or ".." in target.parts:
        raise SystemExit("the agent edits files inside its workspace only")
    print(f"agent: task {args.task!r}, editing {target}", flush=True)
    text = target.read_text() if target.exists() else ""
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text + f"\n<!-- agent note: {args.task} -->\n")

    out = Path(os.environ.get("RUNYARD_ARTIFACTS_DIR", "outputs"))
    out.mkdir(parents=True, exist_ok=True)
    diff = subprocess.run(
        ["git", "diff", "--", str(target)], capture_output=True, text=True, check=True
    )
    (out / "changes.diff").write_text(diff.stdout)
    print(f"agent: wrote outputs/changes.diff ({len(diff.stdout)} bytes)", flush=True)


if __name__ == "__main__":
    main()
