"""Summarise a CSV (or TSV) into outputs/summary.json and outputs/summary.md: rows, columns and
min/mean/max of each numeric column. Standard library only."""

import csv
import json
import os
import sys
from pathlib import Path


def numbers(values: list[str]) -> list[float] | None:
    try:
        return [float(v) for v in values if v.strip() != ""]
    except ValueError:
        return None


def main() -> None:
    source = Path(sys.argv[1])
    dialect = "excel-tab" if source.suffix == ".tsv" else "excel"
    with source.open(newline="") as fh:
        rows = list(csv.reader(fh, dialect=dialect))
    header, body = (rows[0], rows[1:]) if rows else ([], [])
    columns = {}
    for index, name in enumerate(header):
        found = numbers([row[index] for row in body if index < len(row)])
        if found:
            columns[name] = {"min": min(found), "mean": sum(found) / len(found), "max": max(found)}
    summary = {"file": source.name, "rows": len(body), "columns": header, "numeric": columns}
    out = Path(os.environ["RUNYARD_ARTIFACTS_DIR"])
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    lines = [f"# {source.name}", "", f"{len(body)} rows, {len(header)} columns", ""]
    lines += [
        f"- {n}: min {c['min']:g}, mean {c['mean']:g}, max {c['max']:g}" for n, c in columns.items()
    ]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print(f"summarised {len(body)} rows of {source.name}")


if __name__ == "__main__":
    main()
