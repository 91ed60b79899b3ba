"""Where a run's files live under the data directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class RunPaths:
    root: Path  # DATA_DIR/runs/ID

    @classmethod
    def of(cls, data_dir: Path, run_id: str) -> RunPaths:
        return cls(data_dir / "runs" / run_id)

    @property
    def workspace(self) -> Path:
        return self.root / "workspace"

    @property
    def artifacts_dir(self) -> Path:
        return self.workspace / "outputs"

    @property
    def params_file(self) -> Path:
        return self.workspace / "params.json"

    def log(self, attempt: int) -> Path:
        return self.root / f"attempt-{attempt}.log"

    def exit_file(self, attempt: int) -> Path:
        return self.root / f"attempt-{attempt}.exit.json"

    def progress_file(self, attempt: int) -> Path:
        return self.root / f"attempt-{attempt}.progress.jsonl"
