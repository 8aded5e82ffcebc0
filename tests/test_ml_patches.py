"""Patch export from the synthetic scene, metadata, skipping, block-wise reads, verify, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fusecube.cube import read_cube, write_cube
from fusecube.errors import PatchError, PatchFileError
from fusecube.ml.patches.export import PatchExportConfig, export_patches
from fusecube.ml.patches.patch_set import PatchSet
from fusecube.ml.patches.shards import ShardWriter, write_metadata
from fusecube.ml.patches.verify import verify_patch_files
from fusecube.storage.manifest import file_sha256
from fusecube.units import to_db


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    from fusecube.sources.synthetic.scene import SceneConfig
    from fusecube.sources.synthetic.writer import synthesize

    return synthesize(SceneConfig(width=48, height=40, seed=5, n_periods=6),
                      tmp_path_factory.mktemp("ml_scene"))


@pytest.fixture(scope="module")
def holey_cube(scene, tmp_path_factory):
    """The scene's cube with vh invalid in known places."""
    ds = read_cube(scene["cube"]).load()
    vh = ds["vh"].values
    vh[2, 0:16, 0:16] = np.nan           # whole patch (t=2, row 0, col 0): skipped
    vh[3, 16:18, 16:32] = -np.inf        # 32 of 256 values (12.5 %): skipped at 5 %
    vh[4, 0, 16:20] = 0.0                # 4 values (1.6 %): kept and filled
    ds["vh"].values[:] = vh
    return write_cube(ds, tmp_path_factory.mktemp("holey") / "cube.zarr")


def test_export_shapes_counts_and_exact_content(scene, tmp_path):
    cfg = PatchExportConfig(size=16, stride=16, variables=("vv", "vh"), shard_size=7)
    ps = export_patches(scene["cube"], tmp_path / "p", cfg)
    meta = json.loads((tmp_path / "p" / "metadata.json").read_text())
    assert ps.meta == meta
    # 40 x 48 px → 2 x 3 windows, 6 periods
    assert meta["counts"]["candidates"] == 36 and ps.count + meta["counts"]["skipped_invalid"] == 36
    assert meta["variables"] == ["vv", "vh"] and meta["dtype"] == "float32"
    assert [s["count"] for s in meta["shards"]][:-1] == [7] * (len(meta["shards"]) - 1)
    assert sum(s["count"] for s in meta["shards"]) == ps.count
    assert meta["preprocessing"]["export"]["size"] == 16
    assert meta["preprocessing"]["units"] == {"vv": "linear", "vh": "linear"}
    cube = read_cube(scene["cube"]).load()
    for path, shard in zip(ps.shard_paths, meta["shards"], strict=True):
        arr = np.load(path)
        assert arr.dtype == np.float32 and arr.shape == (shard["count"], 2, 16, 16)
        assert file_sha256(path) == shard["sha256"]
    all_patches = np.concatenate([np.load(p) for p in ps.shard_paths])
    t, r, c = ps.column("time_index"), ps.column("row"), ps.column("col")
    for i in (0, 5, ps.count - 1):
        want = np.stack([cube[v].values[t[i], r[i]:r[i] + 16, c[i]:c[i] + 16] for v in ("vv", "vh")])
        np.testing.assert_array_equal(all_patches[i], want)
        assert ps.meta["patches"]["time"][i] == str(cube.time.values[t[i]])[:19]
        assert ps.geobox(i) == cube.odc.geobox[r[i]:r[i] + 16, c[i]:c[i] + 16]
        x0, y0, x1, y1 = ps.meta["patches"]["bbox"][i]
        bb = ps.geobox(i).boundingbox
        assert (x0, y0, x1, y1) == pytest.approx((bb.left, bb.bottom, bb.right, bb.top))
    # shard/offset columns agree with the cumulative index
    starts = np.concatenate([[0], np.cumsum(ps.shard_counts)])
    np.testing.assert_array_equal(starts[ps.column("shard")] + ps.column("offset"),
                                  np.arange(ps.count))


def test_skips_and_fills_invalid_patches(holey_cube, tmp_path):
    cfg = PatchExportConfig(size=16, variables=("vh",), max_invalid_fraction=0.05, db=True)
    ps = export_patches(holey_cube, tmp_path / "p", cfg)
    counts = ps.meta["counts"]
    assert counts["skipped_invalid"] == 2
    assert counts["invalid_values"]["nonpositive"] == 4 and counts["invalid_values"]["filled"] == 4
    assert counts["invalid_values"]["nan"] == 0  # the NaN patch was skipped, not filled
    t, r, c = ps.column("time_index"), ps.column("row"), ps.column("col")
    assert not np.any((t == 2) & (r == 0) & (c == 0))
    assert not np.any((t == 3) & (r == 16) & (c == 16))
    i = int(np.flatnonzero((t == 4) & (r == 0) & (c == 16))[0])
    patch = np.concatenate([np.load(p) for p in ps.shard_paths])[i, 0]
    vh = read_cube(holey_cube)["vh"].values[4, 0:16, 16:32]
    valid = vh > 0
    np.testing.assert_allclose(patch[valid], to_db(vh[valid]), rtol=1e-6)
    assert np.allclose(patch[~valid], to_db(np.median(vh[valid])), atol=1e-5)
    assert verify_patch_files(ps).ok  # filled: no NaN left


def test_blockwise_export_equals_single_block(scene, tmp_path):
    base = dict(size=16, stride=8, variables=("vh",), shard_size=1000)
    one = export_patches(scene["cube"], tmp_path / "one", PatchExportConfig(**base))
    # 16-px blocks, and a memory budget allowing one time step per read
    many = export_patches(scene["cube"], tmp_path / "many",
                          PatchExportConfig(**base, block_size=16, max_block_mb=0.001))
    a = np.load(one.shard_paths[0])
    b = np.load(many.shard_paths[0])
    order_a = np.lexsort((one.column("col"), one.column("row"), one.column("time_index")))
    order_b = np.lexsort((many.column("col"), many.column("row"), many.column("time_index")))
    assert a.shape[0] == 4 * 5 * 6  # overlapping: (40-16)/8+1 rows x (48-16)/8+1 cols x 6
    np.testing.assert_array_equal(a[order_a], b[order_b])


def test_export_errors(scene, tmp_path):
    with pytest.raises(PatchError, match="smaller --size"):
        export_patches(scene["cube"], tmp_path / "x", PatchExportConfig(size=64))
    with pytest.raises(PatchError, match="no variable"):
        export_patches(scene["cube"], tmp_path / "x", PatchExportConfig(size=8, variables=("hh",)))
    export_patches(scene["cube"], tmp_path / "x", PatchExportConfig(size=16))
    with pytest.raises(PatchError, match="--overwrite"):
        export_patches(scene["cube"], tmp_path / "x", PatchExportConfig(size=16))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left


def _tiny_set(root, n=10, shard_size=4):
    rng = np.random.default_rng(0)
    root.mkdir()
    writer = ShardWriter(root, shard_size)
    data = rng.random((n, 1, 4, 4), dtype=np.float32)
    writer.add(data, {"source": [0] * n, "time": ["2024-01-01T00:00:00"] * n,
                      "time_index": [0] * n, "row": list(range(n)), "col": [0] * n,
                      "bbox": [[0, 0, 1, 1]] * n})
    writer.close()
    write_metadata(root, shards=writer.shards, table=writer.table, variables=["vh"],
                   patch_shape=(1, 4, 4), sources=[], preprocessing={}, counts={})
    return PatchSet.open(root)


@pytest.mark.parametrize("kind", ["missing", "unreadable", "shape", "dtype", "count", "nan", "hash"])
def test_verify_catches_each_corruption(tmp_path, kind):
    ps = _tiny_set(tmp_path / "set")
    assert verify_patch_files(ps).ok
    path = ps.shard_paths[1]
    good = np.load(path)
    if kind == "missing":
        path.unlink()
    elif kind == "unreadable":
        path.write_bytes(b"not an npy file")
    elif kind == "shape":
        np.save(path, good.reshape(4, 1, 2, 8))
    elif kind == "dtype":
        np.save(path, good.astype(np.float64))
    elif kind == "count":
        np.save(path, good[:3])
    elif kind == "nan":
        bad = good.copy()
        bad[0, 0, 0, 0] = np.nan
        np.save(path, bad)
    elif kind == "hash":
        bad = good.copy()
        bad[0, 0, 0, 0] += 1.0
        np.save(path, bad)
    report = verify_patch_files(ps)
    assert not report.ok and kind in report.kinds()
    assert all(p.file == "shard_00001.npy" for p in report.problems)
    if kind in ("nan", "hash"):
        assert report.kinds() == {kind} if kind == "hash" else {"nan", "hash"}
    with pytest.raises(PatchFileError, match=kind):
        report.raise_if_failed()


def test_verify_catches_metadata_count_mismatch(tmp_path):
    ps = _tiny_set(tmp_path / "set")
    meta = dict(ps.meta, count=ps.count + 1)
    (ps.root / "metadata.json").write_text(json.dumps(meta))
    assert {"count", "table"} <= verify_patch_files(ps.root).kinds()


def _cli(argv) -> int:
    from fusecube.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    return exc.value.code


def test_cli_export_and_verify(scene, tmp_path, capsys):
    out = tmp_path / "cli"
    assert _cli(["patches", "export", str(scene["cube"]), "--size", "16", "--stride", "16",
                 "--vars", "vv,vh", "--db", "--out", str(out)]) == 0
    assert "36 patches in" in capsys.readouterr().out
    ps = PatchSet.open(out)
    assert ps.variables == ["vv", "vh"] and ps.meta["preprocessing"]["units"]["vh"] == "dB"
    assert _cli(["patches", "verify", str(out)]) == 0
    assert "OK" in capsys.readouterr().out
    assert _cli(["patches", "export", str(scene["cube"]), "--size", "16", "--times", "0,5",
                 "--out", str(tmp_path / "two")]) == 0
    two = PatchSet.open(tmp_path / "two")
    assert two.count == 12 and set(two.column("time_index").tolist()) == {0, 5}
    capsys.readouterr()
    np.save(out / "shard_00000.npy", np.zeros((1, 2, 16, 16), np.float32))
    assert _cli(["patches", "verify", str(out)]) != 0
    assert "[count]" in capsys.readouterr().err


def test_split_of_an_exported_set_does_not_leak(scene, tmp_path):
    from fusecube.splits import spatial_block_split

    ps = export_patches(scene["cube"], tmp_path / "p",
                        PatchExportConfig(size=16, stride=4, variables=("vh",)))
    src, row, col = ps.column("source"), ps.column("row"), ps.column("col")
    split = spatial_block_split(src, row, col, 16, block_size=24, buffer=2, seed=0)
    assert split.train.size and split.val.size
    dr = np.abs(row[split.train][:, None] - row[split.val][None, :]) - 16
    dc = np.abs(col[split.train][:, None] - col[split.val][None, :]) - 16
    assert np.maximum(dr, dc).min() >= 2  # no train window within 2 px of a val window
    loc_train = set(zip(row[split.train].tolist(), col[split.train].tolist(), strict=True))
    loc_val = set(zip(row[split.val].tolist(), col[split.val].tolist(), strict=True))
    assert not loc_train & loc_val  # no location on both sides, at any date


def test_export_side_needs_no_torch():
    import subprocess
    import sys

    code = ("import sys, fusecube, fusecube.ml.patches.export, fusecube.ml.patches.patch_set, "
            "fusecube.ml.patches.verify, fusecube.ml.sar, fusecube.ml.samplers, "
            "fusecube.ml.transforms, fusecube.cli.patches; "
            "print('torch' in sys.modules, 'lightning' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_all_patches_invalid_is_an_error_and_writes_nothing(scene, tmp_path):
    ds = read_cube(scene["cube"]).load()
    ds["vh"].values[:] = 0.0  # non-positive linear backscatter everywhere
    cube = write_cube(ds, tmp_path / "zero.zarr")
    with pytest.raises(PatchError, match="All 36 candidate patches"):
        export_patches(cube, tmp_path / "out", PatchExportConfig(size=16))
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]
