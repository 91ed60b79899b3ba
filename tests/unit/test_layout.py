"""The two forms of a run's layout — Paths for the rest of the server, strings for the spawn
path — name the same files."""

from __future__ import annotations

from pathlib import Path

from runyard.execution.layout import AttemptFiles, RunPaths


def test_attempt_files_are_the_run_paths_as_strings(tmp_path: Path) -> None:
    paths = RunPaths.of(tmp_path, "01RUN")
    files = AttemptFiles.of(str(tmp_path / "runs"), "01RUN", 3)
    assert files == AttemptFiles(
        root=str(paths.root), workspace=str(paths.workspace), outputs=str(paths.artifacts_dir),
        params=str(paths.params_file), log=str(paths.log(3)), exit=str(paths.exit_file(3)),
        progress=str(paths.progress_file(3)),
    )  # fmt: skip
