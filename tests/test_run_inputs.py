"""One resolved mask and one set of thresholds for the whole run: screen, stage gates, report."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pytest
from shapely.geometry import box

from fusecube.config import CubeSource, RunConfig
from fusecube.cube import PADDY_MASK, read_cube
from fusecube.masks.resolve import mask_with_report
from fusecube.runner import run


@pytest.fixture
def left_half_mask(small_scene, tmp_path):
    """A GeoJSON mask over the western half of the scene: not the cube's own paddy_mask."""
    cube = read_cube(small_scene["cube"])
    gb = cube.odc.geobox
    left, bottom, right, top = gb.extent.boundingbox
    west = box(left, bottom, left + (right - left) / 2, top)
    path = tmp_path / "west.geojson"
    gpd.GeoDataFrame({"name": ["west"]}, geometry=[west], crs=str(gb.crs)).to_file(path)
    return path


def test_screen_stage_gates_and_report_use_the_runs_mask_file(small_scene, left_half_mask,
                                                              tmp_path):
    cube = read_cube(small_scene["cube"])
    own = cube[PADDY_MASK].values > 0
    wanted, _ = mask_with_report(str(left_half_mask), cube)
    wanted = wanted.values > 0
    assert wanted[:, 24:].sum() == 0 and wanted.sum() > 0
    assert (wanted != own).sum() > 100  # the file and the cube's mask disagree on many pixels

    config = RunConfig(source=CubeSource(path=small_scene["cube"]), out=tmp_path / "out",
                       ledger=str(tmp_path / "l.sqlite"), mask=str(left_half_mask),
                       block_size=24, report=True)
    result = run(config)

    # the screen: the coverage gate measured the file's mask, not the cube's paddy_mask
    gates = {g["gate"]: g for g in result.screen["gates"]}
    coverage = gates["paddy_coverage"]
    assert coverage["value"] == pytest.approx(wanted.mean())
    assert coverage["value"] != pytest.approx(own.mean())
    assert str(left_half_mask) in coverage["message"]

    # the blocks: stages ran on the file's mask (phenology only inside it)
    out = read_cube(result.result)
    np.testing.assert_array_equal(out[PADDY_MASK].values > 0, wanted)
    found = np.isfinite(out["sos_doy"].values).any(axis=0)
    assert not found[~wanted].any() and found[wanted].any()

    # the report: the same mask (its file, its coverage) and the stage gates' thresholds
    quality = json.loads((tmp_path / "out" / "quality" / "quality.json").read_text())
    assert quality["mask"]["source"] == str(left_half_mask)
    assert {g["gate"]: g["value"] for g in quality["gates"]}["paddy_coverage"] == coverage["value"]
    stage = [g for g in quality["gates"] if g["stage"] != "input" and g["stage"] != "mask"]
    assert stage, "the report lists the stage gates the blocks ran"
    assert quality["screen"] == json.loads(json.dumps(result.screen, default=str))
