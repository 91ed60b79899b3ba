"""A toy simulation: a random walk of `ticks` steps, with progress lines, JSON/CSV results and
a PNG plot (written with the standard library only, so the example needs nothing installed)."""

import argparse
import csv
import json
import os
import random
import struct
import time
import zlib
from pathlib import Path


def write_png(path: Path, xs: list[float], width: int = 480, height: int = 200) -> None:
    """A line plot of xs: white background, blue line, grey zero axis."""
    px = [[(255, 255, 255)] * width for _ in range(height)]
    lo, hi = min([*xs, 0.0]), max([*xs, 0.0])
    span = (hi - lo) or 1.0

    def y_of(v: float) -> int:
        return height - 1 - round((v - lo) / span * (height - 11)) - 5

    for col in range(width):
        px[y_of(0.0)][col] = (200, 200, 200)
    prev = None
    for col in range(width):
        y = y_of(xs[min(len(xs) - 1, col * len(xs) // width)])
        top, bottom = (y, y) if prev is None else (min(y, prev), max(y, prev))
        for row in range(top, bottom + 1):  # join the points: a line, not dots
            px[row][col] = (47, 91, 211)
        prev = y
    raw = b"".join(b"\x00" + bytes(c for p in row for c in p) for row in px)

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ticks", type=int, required=True)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--drift", type=float, default=0.0)
    ap.add_argument("--pace", type=float, default=0.0, help="seconds to wait at each report")
    args = ap.parse_args()

    rng = random.Random(args.seed)
    out = Path(os.environ.get("RUNYARD_ARTIFACTS_DIR", "outputs"))
    out.mkdir(parents=True, exist_ok=True)
    progress = os.environ.get("RUNYARD_PROGRESS_FILE")
    every = max(1, args.ticks // 10)

    x, lo, hi = 0.0, 0.0, 0.0
    path_taken: list[float] = []
    with (out / "trajectory.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["tick", "x"])
        for tick in range(1, args.ticks + 1):
            x += rng.gauss(args.drift, 1.0)
            lo, hi = min(lo, x), max(hi, x)
            if tick % max(1, args.ticks // 2000) == 0:
                path_taken.append(x)
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
                time.sleep(args.pace)
    result = {"ticks": args.ticks, "seed": args.seed, "final": x, "min": lo, "max": hi}
    write_png(out / "trajectory.png", path_taken or [0.0])
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    print("done", json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
