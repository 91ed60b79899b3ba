"""Writes N progress lines as fast as it can, one bad line, then a last one: a flood."""

import json
import os
import sys

with open(os.environ["RUNYARD_PROGRESS_FILE"], "a") as out:
    for i in range(int(sys.argv[1])):
        out.write(f'{{"i": {i}}}\n')
    out.write("not json\n")
    out.write(json.dumps({"done": True}) + "\n")
