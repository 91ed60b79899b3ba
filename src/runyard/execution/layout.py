"""Where a run's files live under the data directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# The names, once: RunPaths gives them as Paths, AttemptFiles as strings for the hot path.
WORKSPACE = "workspace"
OUTPUTS = "workspace/outputs"
PARAMS = "workspace/params.json"


def _log(attempt: int) -> str:
    return f"attempt-{attempt}.log"


def _exit(attempt: int) -> str:
    return f"attempt-{attempt}.exit.json"


def _progress(attempt: int) -> str:
    return f"attempt-{attempt}.progress.jsonl"


@dataclass(frozen=True, slots=True)
class RunPaths:
    root: Path  # DATA_DIR/runs/ID

    @classmethod
    def of(cls, data_dir: Path, run_id: str) -> RunPaths:
        return cls(data_dir / "runs" / run_id)

    @property
    def workspace(self) -> Path:
        return self.root / WORKSPACE

    @property
    def artifacts_dir(self) -> Path:
        return self.root / OUTPUTS

    @property
    def params_file(self) -> Path:
        return self.root / PARAMS

    def log(self, attempt: int) -> Path:
        return self.root / _log(attempt)

    def exit_file(self, attempt: int) -> Path:
        return self.root / _exit(attempt)

    def progress_file(self, attempt: int) -> Path:
        return self.root / _progress(attempt)


@dataclass(frozen=True, slots=True)
class AttemptFiles:
    """One attempt's paths as strings, joined without pathlib: built for every spawn."""

    root: str
    workspace: str
    outputs: str
    params: str
    log: str
    exit: str
    progress: str

    @classmethod
    def of(cls, runs_dir: str, run_id: str, attempt: int) -> AttemptFiles:
        root = f"{runs_dir}/{run_id}"
        base = root + "/"
        return cls(
            root, base + WORKSPACE, base + OUTPUTS, base + PARAMS, base + _log(attempt),
            base + _exit(attempt), base + _progress(attempt),
        )  # fmt: skip
