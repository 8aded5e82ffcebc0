"""The bad-input catalogue, outputs: the output rule and the result gates, through the CLI.

Every command that writes an output refuses, before any work, an output that is an ordinary
file where a folder or store is to be written, a folder fusecube did not make, or a place it
cannot write; a run whose results are empty or implausible fails and keeps the previous
output. Each case leaves the earlier output folder (``out``) byte-identical.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
from catalogue import Case, Env, run_case
from odc.geo.geobox import GeoBox

from fusecube.cube import NDVI, PADDY_MASK
from fusecube.errors import OutputWriteError, ResultGateFailed

#: Folders the current case made read-only (emulated for root, who may write anywhere).
READ_ONLY: list[Path] = []


@pytest.fixture(autouse=True)
def _read_only_folders(monkeypatch):
    """Make the folders in :data:`READ_ONLY` refuse writes, for every user.

    A normal user is stopped by the folder's mode; root is not, so for root every ``os.open``
    that would create or write below such a folder fails as on a read-only mount (EROFS).
    """
    READ_ONLY.clear()
    if os.geteuid() == 0:
        real_open = os.open

        def read_only_open(path, flags, *args, **kwargs):
            writes = flags & (os.O_CREAT | os.O_WRONLY | os.O_RDWR)
            if writes and any(Path(os.fsdecode(path)).is_relative_to(f) for f in READ_ONLY):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fsdecode(path))
            return real_open(path, flags, *args, **kwargs)

        monkeypatch.setattr(os, "open", read_only_open)
    yield
    for folder in READ_ONLY:
        folder.chmod(0o755)


def _out(env: Env) -> Path:
    """The earlier output folder the harness checks (made after the case is built)."""
    return env.tmp.parent / "out"


def _foreign(env: Env) -> Path:
    """A folder of someone else's files inside the checked output folder."""
    folder = _out(env) / "thesis"
    folder.mkdir(parents=True)
    (folder / "chapter1.docx").write_text("years of work")
    return folder


def _read_only(env: Env) -> Path:
    folder = _out(env) / "locked"
    folder.mkdir(parents=True)
    folder.chmod(0o555)
    READ_ONLY.append(folder)
    return folder


def _an_earlier_file(env: Env) -> Path:
    """An ordinary file of the earlier output: ``report.html`` (the harness writes it)."""
    return _out(env) / "report.html"


def _geotiffs(env: Env) -> str:
    folder = env.tmp / "gee"
    folder.mkdir()
    gbox = GeoBox.from_bbox((110.60, -6.95, 110.62, -6.93), "EPSG:4326", resolution=0.0005)
    for period in (1, 2, 3):
        data = np.stack([np.full(gbox.shape.yx, 0.05), np.full(gbox.shape.yx, 0.01),
                         np.full(gbox.shape.yx, 0.1 * period)]).astype("float32")
        with rasterio.open(folder / f"period_{period:02d}.tif", "w", driver="GTiff",
                           width=gbox.shape.x, height=gbox.shape.y, count=3, dtype="float32",
                           crs="EPSG:4326", transform=gbox.affine) as dst:
            dst.write(data)
    return str(folder)


def _run(env: Env, cube: str) -> list[str]:
    path = env.tmp / "cfg.yaml"
    path.write_text(f"source: {{kind: cube, path: '{cube}'}}\nreport: false\ngapfill: linear\n")
    return ["run", str(path)]


def _aois(env: Env) -> str:
    path = env.tmp / "aois.csv"
    path.write_text("id,lon,lat,size_km\ndemak,110.61,-6.94,0.5\n")
    return str(path)


def _import(env: Env, out: Path) -> list[str]:
    return ["import-geotiff", _geotiffs(env), "--start", "2023-11-01", "--out", str(out)]


def _fetch(out: Path) -> list[str]:
    # port 9 (discard) on the loopback: a request would fail, but none may be made at all
    return ["fetch", "--aoi", "110.60,-6.95,110.62,-6.93", "--start", "2023-01-01", "--end",
            "2023-02-01", "--catalogue", "http://127.0.0.1:9/stac", "--retries", "1", "--out",
            str(out)]


def _batch(env: Env, out: Path) -> list[str]:
    return ["batch", "run", _aois(env), "--start", "2023-11-01", "--end", "2024-03-01",
            "--out", str(out)]


def _no_seasons(env: Env) -> str:
    """NDVI without any seasonal cycle (another band exported as NDVI): plausible values."""
    rng = np.random.default_rng(0)
    flat = 0.3 + 0.02 * rng.standard_normal(env.cube[NDVI].shape).astype("float32")
    return env.variant("no_seasons.zarr", ndvi=env.cube[NDVI].copy(data=flat).where(
        np.isfinite(env.cube[NDVI])))


FILE = "is a file; refusing"
FOREIGN = "fusecube did not write"

CASES = [
    # --- the output is an ordinary file where a folder or store is to be written
    Case("out_check_out_is_a_file",
         lambda e: ["check", str(e.scene["cube"]), "--out", str(_an_earlier_file(e))],
         OutputWriteError, FILE),
    Case("out_import_geotiff_out_is_a_file", lambda e: _import(e, _an_earlier_file(e)),
         OutputWriteError, FILE),
    Case("out_convert_out_is_a_file",
         lambda e: ["convert", str(e.scene["cube"]), "--out", str(_an_earlier_file(e)),
                    "--overwrite"], OutputWriteError, FILE),
    Case("out_run_out_is_a_file",
         lambda e: [*_run(e, str(e.scene["cube"])), "--out", str(_an_earlier_file(e))],
         OutputWriteError, FILE),
    Case("out_demo_out_is_a_file",
         lambda e: ["demo", "--size", "16x16", "--out", str(_an_earlier_file(e))],
         OutputWriteError, FILE),
    Case("out_fetch_out_is_a_file", lambda e: _fetch(_an_earlier_file(e)), OutputWriteError,
         FILE),
    Case("out_fuse_predict_out_is_a_file",
         lambda e: ["fuse", "predict", str(e.scene["cube"]), "--model", str(e.tmp / "m.pt"),
                    "--out", str(_an_earlier_file(e))], OutputWriteError, FILE),
    Case("out_patches_export_out_is_a_file",
         lambda e: ["patches", "export", str(e.scene["cube"]), "--size", "16", "--out",
                    str(_an_earlier_file(e))], OutputWriteError, FILE),
    Case("out_batch_out_is_a_file", lambda e: _batch(e, _an_earlier_file(e)), OutputWriteError,
         FILE),
    # --- the output is a folder fusecube did not make (or made as something else)
    Case("out_run_into_a_foreign_folder",
         lambda e: [*_run(e, str(e.scene["cube"])), "--out", str(_foreign(e))],
         OutputWriteError, FOREIGN),
    Case("out_check_into_a_foreign_folder",
         lambda e: ["check", str(e.scene["cube"]), "--out", str(_foreign(e))],
         OutputWriteError, FOREIGN),
    Case("out_convert_into_a_foreign_folder",
         lambda e: ["convert", str(e.scene["cube"]), "--out", str(_foreign(e)), "--overwrite"],
         OutputWriteError, FOREIGN),
    Case("out_import_geotiff_into_a_foreign_folder", lambda e: _import(e, _foreign(e)),
         OutputWriteError, FOREIGN),
    Case("out_patches_into_a_foreign_folder",
         lambda e: ["patches", "export", str(e.scene["cube"]), "--size", "16", "--overwrite",
                    "--out", str(_foreign(e))], OutputWriteError, FOREIGN),
    Case("out_run_over_a_zarr_cube",
         lambda e: [*_run(e, str(e.scene["cube"])), "--out", str(_out(e) / "result.zarr")],
         OutputWriteError, "holds none of run.json"),
    # --- the output's folder is read-only
    Case("out_run_read_only_folder",
         lambda e: [*_run(e, str(e.scene["cube"])), "--out", str(_read_only(e) / "run")],
         OutputWriteError, "locked is not writable"),
    Case("out_check_read_only_folder",
         lambda e: ["check", str(e.scene["cube"]), "--out", str(_read_only(e) / "quality")],
         OutputWriteError, "locked is not writable"),
    Case("out_import_geotiff_read_only_folder",
         lambda e: _import(e, _read_only(e) / "cube.zarr"), OutputWriteError,
         "locked is not writable"),
    Case("out_convert_read_only_folder",
         lambda e: ["convert", str(e.scene["cube"]), "--out", str(_read_only(e) / "c.zarr")],
         OutputWriteError, "locked is not writable"),
    Case("out_batch_read_only_folder", lambda e: _batch(e, _read_only(e) / "batch"),
         OutputWriteError, "locked is not writable"),
    # --- results that are empty or implausible: the run fails, the earlier output stays
    Case("out_run_ndvi_scale_applied_twice",
         lambda e: _run(e, e.variant("twice.zarr", ndvi=e.cube[NDVI] * 1e-4)),
         ResultGateFailed, "no rice season"),
    Case("out_run_all_nan_ndvi",
         lambda e: _run(e, e.variant("nan.zarr", ndvi=e.cube[NDVI] * np.nan)),
         ResultGateFailed, "ndvi_fused holds no finite value"),
    Case("out_run_ndvi_without_seasons", lambda e: _run(e, _no_seasons(e)), ResultGateFailed,
         "paddy_without_season"),
    Case("out_run_mask_without_paddy",
         lambda e: _run(e, e.variant("nopaddy.zarr", **{PADDY_MASK: e.cube[PADDY_MASK] * 0})),
         ResultGateFailed, "ndvi_fused holds no finite value over the paddy pixels"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case, catalogue_base, tmp_path, capsys, monkeypatch):
    run_case(case, catalogue_base, tmp_path, capsys, monkeypatch)


@pytest.mark.parametrize(("argv", "work"), [
    (lambda e, out: ["check", str(e.scene["cube"]), "--out", str(out)],
     "fusecube.quality.cube_check.check_cube"),
    (lambda e, out: _import(e, out), "fusecube.sources.geotiff.read_geotiff_stack"),
    (lambda e, out: ["convert", str(e.scene["cube"]), "--out", str(out), "--overwrite"],
     "fusecube.sources.convert.open_source"),
    (lambda e, out: [*_run(e, str(e.scene["cube"])), "--out", str(out)],
     "fusecube.runner.execution.prepare_source"),
    (lambda e, out: _fetch(out), "fusecube.sources.stac.fetch.fetch"),
    (lambda e, out: _batch(e, out), "fusecube.batch.run.read_aois"),
], ids=["check", "import-geotiff", "convert", "run", "fetch", "batch"])
def test_refused_before_any_work(argv, work, catalogue_base, tmp_path, monkeypatch, capsys):
    """The refusal comes first: the command's work (gates, reads, requests) never starts."""
    from fusecube.cli import main

    scene, cube = catalogue_base
    env = Env(tmp_path / "inputs", scene, cube)
    env.tmp.mkdir()
    target = tmp_path / "precious.txt"
    target.write_text("keep me")

    def must_not_run(*args, **kwargs):
        raise AssertionError(f"{work} ran before the output was checked")

    monkeypatch.setattr(work, must_not_run)
    with pytest.raises(SystemExit) as info:
        main(argv(env, target))
    assert type(info.value.__context__) is OutputWriteError
    assert target.read_text() == "keep me"
    assert "error:" in capsys.readouterr().err
