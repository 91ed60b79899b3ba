"""A toy simulation: a random walk of `ticks` steps, with progress lines and JSON/CSV results."""

import argparse
import csv
import json
import os
import random
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ticks", type=int, required=True)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--drift", type=float, default=0.0)
    args = ap.parse_args()

    rng = random.Random(args.seed)
    out = Path(os.environ.get("RUNYARD_ARTIFACTS_DIR", "outputs"))
    out.mkdir(parents=True, exist_ok=True)
    progress = os.environ.get("RUNYARD_PROGRESS_FILE")
    every = max(1, args.ticks // 10)

    x, lo, hi = 0.0, 0.0, 0.0
    with (out / "trajectory.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["tick", "x"])
        for tick in range(1, args.ticks + 1):
            x += rng.gauss(args.drift, 1.0)
            lo, hi = min(lo, x), max(hi, x)
            if tick % every == 0 or tick == args.ticks:
                writer.writerow([tick, round(x, 6)])
                print(f"tick {tick}/{args.ticks} x={x:.3f}", flush=True)
                if progress:
                    with open(progress, "a") as p:
                        line = {
                            "fraction": tick / args.ticks,
                            "message": f"tick {tick}/{args.ticks}",
                        }
                        p.write(json.dumps(line) + "\n")
    result = {"ticks": args.ticks, "seed": args.seed, "final": x, "min": lo, "max": hi}
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    print("done", json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
