"""storage.atomic: staging beside the target, what may be replaced; storage.manifest checksums."""

from __future__ import annotations

import json

import pytest

from fusecube.errors import IntegrityError, OutputWriteError
from fusecube.storage.atomic import (
    atomic_path,
    check_replaceable,
    replace_path,
    staging_path,
    write_text_atomic,
)
from fusecube.storage.manifest import (
    checksums_digest,
    dataset_manifest,
    file_sha256,
    manifest_path,
    store_checksums,
    verify_checksums,
)


def test_staging_name_is_hidden_beside_the_target_and_keeps_the_suffix(tmp_path):
    staged = staging_path(tmp_path / "blocks.gpkg")
    assert staged.parent == tmp_path
    assert staged.name.startswith(".blocks.tmp-") and staged.name.endswith(".gpkg")
    assert len(staged.name) == len(".blocks.tmp-") + 8 + len(".gpkg")
    assert staging_path(tmp_path / "blocks.gpkg") != staged


def test_atomic_file_write_replaces_and_leaves_nothing_behind(tmp_path):
    target = tmp_path / "sub" / "report.html"
    assert write_text_atomic(target, "one") == target
    write_text_atomic(target, "two")
    assert target.read_text() == "two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["report.html"]


def test_a_failed_write_keeps_the_previous_file(tmp_path):
    target = tmp_path / "summary.json"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="disk"), atomic_path(target) as staged:
        staged.write_text("half")
        raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_atomic_folder_replaces_a_folder_fusecube_made(tmp_path):
    target = tmp_path / "result.zarr"
    target.mkdir()
    (target / "zarr.json").write_text("{}")
    (target / "old_var").mkdir()
    with atomic_path(target, folder=True) as staged:
        staged.mkdir()
        (staged / "zarr.json").write_text('{"new": 1}')
    assert sorted(p.name for p in target.iterdir()) == ["zarr.json"]
    assert json.loads((target / "zarr.json").read_text()) == {"new": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["result.zarr"]


@pytest.mark.parametrize(("make", "folder", "match"), [
    (lambda p: p.mkdir(), False, "is a folder"),
    (lambda p: p.write_text("x"), True, "is a file"),
    (lambda p: (p.mkdir(), (p / "thesis.docx").write_text("x")), True, "did not write"),
], ids=["file-over-folder", "folder-over-file", "foreign-folder"])
def test_refusals_happen_before_any_work(tmp_path, make, folder, match):
    target = tmp_path / "out"
    make(target)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    ran = []
    with pytest.raises(OutputWriteError, match=match), atomic_path(target, folder=folder):
        ran.append(True)
    assert not ran
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_empty_and_marked_folders_may_be_replaced(tmp_path):
    (tmp_path / "empty").mkdir()
    check_replaceable(tmp_path / "empty", folder=True)
    for marker in ("zarr.json", "metadata.json", "quality.json"):
        folder = tmp_path / marker.split(".")[0]
        folder.mkdir()
        (folder / marker).write_text("{}")
        (folder / "other").write_text("x")
        check_replaceable(folder, folder=True)
    check_replaceable(tmp_path / "missing", folder=True)


def test_replace_path_moves_a_staged_folder_in(tmp_path):
    src, dst = tmp_path / ".partial", tmp_path / "result.zarr"
    src.mkdir()
    (src / "zarr.json").write_text("new")
    dst.mkdir()
    (dst / "zarr.json").write_text("old")
    replace_path(src, dst)
    assert (dst / "zarr.json").read_text() == "new" and not src.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["result.zarr"]


def test_manifest_checksums_and_dataset_digest(tmp_path):
    store = tmp_path / "cube.zarr"
    (store / "vv" / "c").mkdir(parents=True)
    (store / "zarr.json").write_bytes(b"{}")
    (store / "vv" / "c" / "0").write_bytes(b"abc")
    sums = store_checksums(store)
    assert sums == {"vv/c/0": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
                    "zarr.json": "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"}
    assert file_sha256(store / "vv" / "c" / "0") == sums["vv/c/0"]
    manifest_path(store).write_text(json.dumps({"files": sums, "digest": checksums_digest(sums)}))
    assert verify_checksums(store)["digest"] == checksums_digest(sums)
    digest = dataset_manifest([store])
    assert digest["cubes"][0]["files"] == 2 and digest["cubes"][0]["bytes"] == 5
    (store / "vv" / "c" / "0").write_bytes(b"abd")
    (store / "extra").write_bytes(b"")
    with pytest.raises(IntegrityError, match=r"changed \['vv/c/0'\]; extra \['extra'\]"):
        verify_checksums(store)
