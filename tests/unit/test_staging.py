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


def _path(path: str | None) -> str:
    return "" if path is None else f'path = "{path}"\n'


@pytest.mark.parametrize(
    ("a", "b", "c"),
    [
        ("case/m.stl", "case/m.stl", None),
        ("case", "case/m.stl", None),
        # a probe: each of these was shared at load and fought over at run time
        (None, "inputs/one/x.csv", None),  # another param's folder: one read the other's file
        (None, "inputs/one", None),
        (None, "inputs", None),
        ("params.json", None, None),  # runyard's params file took the input's place
        ("outputs", None, None),  # the artifacts folder: every run failed
        ("outputs/in.csv", None, None),
        ("x", "x-y", "x/z"),  # sorted neighbours alone: `x-y` hid `x` and `x/z`
    ],
)
def test_file_params_whose_places_overlap_are_a_load_error(
    tmp_path: Path, a: str | None, b: str | None, c: str | None
) -> None:
    from runyard.jobs.spec import LoadError, load_job

    job = tmp_path / "two.toml"
    job.write_text(
        f'command = ["true"]\n[params.one]\ntype = "file"\n{_path(a)}'
        f'[params.two]\ntype = "file"\n{_path(b)}[params.three]\ntype = "file"\n{_path(c)}'
    )
    with pytest.raises(LoadError, match="overlap"):
        load_job(job)


def test_an_input_named_as_a_folder_the_workspace_holds_fails_naming_it(
    uploads: Path, tmp_path: Path
) -> None:
    """A probe: a run naming its file `sub` where a workspace source made `inputs/data/sub/`
    failed with a bare `[Errno 21] Is a directory`."""
    workspace = tmp_path / "ws"
    (workspace / "inputs" / "data" / "sub").mkdir(parents=True)
    with pytest.raises(WorkspaceError, match="input 'data': the workspace holds a folder"):
        stage(uploads, workspace, {"data": f"{ID}/sub"})
    assert (workspace / "inputs" / "data" / "sub").is_dir()  # left as it was


def test_an_input_lands_under_the_name_the_run_gives_it(uploads: Path, tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    staged = stage(uploads, workspace, {"model": f"{ID}/wing.stl", "plain": ID})
    assert staged["model"]["path"] == str(workspace / "inputs" / "model" / "wing.stl")
    assert staged["plain"]["path"] == str(workspace / "inputs" / "plain" / "part.stl")
