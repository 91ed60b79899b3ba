"""Staging a run's file inputs (execution/inputs.py): linked read-only where the job says,
never through a symlink that could lead out of the workspace."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from runyard.execution.inputs import stage
from runyard.execution.workspace import WorkspaceError

BODY = b"solid part\n"
ID = hashlib.sha256(BODY).hexdigest()


@pytest.fixture
def uploads(tmp_path: Path) -> Path:
    folder = tmp_path / "uploads"
    folder.mkdir()
    (folder / ID).write_bytes(BODY)
    (folder / ID).chmod(0o444)
    (folder / f"{ID}.json").write_text(json.dumps({"name": "part.stl", "size": len(BODY)}))
    return folder


def test_an_input_lands_under_inputs_by_default_and_where_the_job_says(
    uploads: Path, tmp_path: Path
) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    staged = stage(uploads, workspace, {"model": ID, "mesh": ID}, {"mesh": "case/mesh.stl"})
    assert staged["model"]["path"] == str(workspace / "inputs" / "model" / "part.stl")
    assert staged["mesh"] == {"path": str(workspace / "case" / "mesh.stl"),
                              "size": len(BODY), "sha256": ID}  # fmt: skip
    for entry in staged.values():
        assert Path(entry["path"]).read_bytes() == BODY
        assert os.stat(entry["path"]).st_mode & 0o777 == 0o444


@pytest.mark.parametrize("where", [None, {"model": "out/model.stl"}])
def test_an_input_is_never_staged_through_a_symlink(
    uploads: Path, tmp_path: Path, where: dict[str, str] | None
) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (workspace / ("out" if where else "inputs")).symlink_to(elsewhere)
    with pytest.raises(WorkspaceError, match="symlink"):
        stage(uploads, workspace, {"model": ID}, where)
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize(("a", "b"), [("case/m.stl", "case/m.stl"), ("case", "case/m.stl")])
def test_file_params_whose_paths_overlap_are_a_load_error(tmp_path: Path, a: str, b: str) -> None:
    from runyard.jobs.spec import LoadError, load_job

    job = tmp_path / "two.toml"
    job.write_text(
        f'command = ["true"]\n[params.one]\ntype = "file"\npath = "{a}"\n'
        f'[params.two]\ntype = "file"\npath = "{b}"\n'
    )
    with pytest.raises(LoadError, match="overlap"):
        load_job(job)
