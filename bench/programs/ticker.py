"""Prints `n` lines, each stamped with the time it was written, `gap` seconds apart."""

import sys
import time

n, gap = int(sys.argv[1]), float(sys.argv[2])
time.sleep(float(sys.argv[3]) if len(sys.argv) > 3 else 0)  # let watchers connect first
for i in range(n):
    print(f"{time.time():.6f} line {i}", flush=True)
    time.sleep(gap)
