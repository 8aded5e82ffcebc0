"""Run outputs at fsspec URLs: memory:// and local:// through fsspec, file:// as a plain folder.

Object stores cannot rename, so a run is computed in a local working folder and copied to the
URL through a staging prefix, the manifest last (:mod:`fusecube.storage.remote`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import fsspec
import pytest
import xarray as xr

from fusecube.config import CubeSource, RunConfig
from fusecube.errors import OutputWriteError
from fusecube.runner import Ledger, run
from fusecube.storage.remote import RemoteOutput, as_output, remote_output


@pytest.fixture
def config(small_scene, tmp_path, monkeypatch):
    monkeypatch.setenv("FUSECUBE_REMOTE_WORK", str(tmp_path / "work"))
    return RunConfig(source=CubeSource(path=small_scene["cube"]), out=tmp_path / "unused",
                     ledger=str(tmp_path / "ledger.sqlite"), report=False, block_size=24,
                     gapfill="linear")


def _files(fs, root: str) -> dict[str, bytes]:
    return {p[len(root) + 1:]: fs.cat_file(p) for p in fs.find(root)}


def _check_published(url: str, run_id: str) -> dict[str, bytes]:
    """The URL holds one complete run: manifest last, every listed file with its SHA-256."""
    fs, root = fsspec.core.url_to_fs(url)
    files = _files(fs, root)
    manifest = json.loads(files["manifest.json"])
    assert manifest["run_id"] == run_id
    for name, entry in manifest["files"].items():
        assert hashlib.sha256(files[name]).hexdigest() == entry["sha256"], name
    assert "run.json" in files and any(k.startswith("result.zarr/") for k in files)
    parent = root.rsplit("/", 1)[0]
    assert not [p for p in fs.ls(parent, detail=False) if ".run-" in p], "staging prefix left"
    return files


def test_memory_url_holds_the_run_and_replaces_the_previous_one(config):
    url = "memory://fusecube-test/runs/demak"
    first = run(config.model_copy(update={"out": url}))
    files = _check_published(url, first.run_id)
    remote = xr.open_zarr(fsspec.get_mapper(f"{url}/result.zarr"), consolidated=False).load()
    local = xr.open_zarr(first.result, consolidated=False).load()
    xr.testing.assert_identical(remote, local)
    # a second run into the same URL replaces the first as a whole
    fs, root = fsspec.core.url_to_fs(url)
    fs.pipe_file(f"{root}/result.zarr/stale-chunk", b"from an older run")
    second = run(config.model_copy(update={"out": url, "gapfill": "whittaker"}))
    again = _check_published(url, second.run_id)
    assert "result.zarr/stale-chunk" not in again
    assert again["result.zarr/zarr.json"] != files["result.zarr/zarr.json"] or \
        again["manifest.json"] != files["manifest.json"]


def test_interrupted_upload_leaves_the_previous_output(config, monkeypatch):
    url = "memory://fusecube-test/runs/interrupted"
    first = run(config.model_copy(update={"out": url}))
    before = _check_published(url, first.run_id)
    fs, root = fsspec.core.url_to_fs(url)
    calls = []

    def failing_put(self, lpath, rpath, **kwargs):
        calls.append(rpath)
        if len(calls) > 3:
            raise OSError("connection reset by the object store")
        return original(self, lpath, rpath, **kwargs)

    original = type(fs).put_file
    monkeypatch.setattr(type(fs), "put_file", failing_put)
    with pytest.raises(OSError, match="connection reset"):
        RemoteOutput(url, Path(first.out)).publish(first)
    monkeypatch.setattr(type(fs), "put_file", original)
    assert _files(fs, root) == before  # untouched: the copy went to the staging prefix


def test_local_url_through_fsspec_and_file_url_as_folder(config, tmp_path):
    target = tmp_path / "published"
    result = run(config.model_copy(update={"out": f"local://{target}"}))
    _check_published(f"local://{target}", result.run_id)
    assert (target / "manifest.json").is_file() and (target / "result.zarr" / "zarr.json").is_file()
    as_file = config.model_copy(update={"out": as_output(f"file://{tmp_path / 'plain'}")})
    assert as_file.out == tmp_path / "plain"
    assert RunConfig.model_validate({"out": f"file://{tmp_path / 'plain'}"}).out == tmp_path / "plain"
    assert RunConfig.model_validate({"out": "memory://b/x"}).out == "memory://b/x"
    assert RunConfig.model_validate({"out": "results/x"}).out == Path("results/x")


def test_foreign_files_at_the_url_are_refused_before_any_work(config):
    url = "memory://fusecube-test/foreign"
    fs, root = fsspec.core.url_to_fs(url)
    fs.pipe_file(f"{root}/notes.txt", b"someone's notes")
    with pytest.raises(OutputWriteError, match="did not write"):
        run(config.model_copy(update={"out": url}))
    assert Ledger(config.ledger).list_runs() == []
    assert fs.cat_file(f"{root}/notes.txt") == b"someone's notes"


def test_unknown_protocol_names_the_fix():
    with pytest.raises(OutputWriteError, match="Install the filesystem's package"):
        remote_output("nosuchfs://bucket/x")
