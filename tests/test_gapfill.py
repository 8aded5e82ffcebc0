"""The gap-fill stage: one entry point, lazy baselines equal to the eager ones, dispatch."""

from __future__ import annotations

from types import SimpleNamespace

import dask
import numpy as np
import pytest
import xarray as xr

from fusecube.cube import NDVI, NDVI_FUSED, read_cube
from fusecube.errors import ConfigError
from fusecube.fusion.ridge.model import RidgeConfig
from fusecube.stages.gapfill import GapfillConfig, context_halo, gapfill


@pytest.mark.parametrize("method", ["linear", "whittaker"])
def test_baselines_stay_lazy_on_a_dask_cube_and_equal_the_eager_result(small_scene, method):
    cube = read_cube(small_scene["cube"]).load()
    config = GapfillConfig(method=method, lam=1.5)
    eager = gapfill(cube, config=config)
    lazy = gapfill(cube.chunk({"time": 20, "y": 16, "x": 20}), config=config)
    assert dask.is_dask_collection(lazy[NDVI_FUSED].data)
    assert lazy[NDVI_FUSED].chunks[1:] == ((16, 16, 16), (20, 20, 8))
    computed = lazy.compute()
    xr.testing.assert_identical(computed, eager)
    assert computed[NDVI_FUSED].values.tobytes() == eager[NDVI_FUSED].values.tobytes()
    observed = np.isfinite(cube[NDVI].values)
    np.testing.assert_array_equal(eager[NDVI_FUSED].values[observed], cube[NDVI].values[observed])
    assert eager[NDVI_FUSED].attrs["gapfill_method"] == method


def test_fusion_needs_a_model_and_unknown_methods_are_refused(small_scene):
    cube = read_cube(small_scene["cube"]).load()
    with pytest.raises(ConfigError, match="trained model"):
        gapfill(cube, config=GapfillConfig(method="fusion"))
    with pytest.raises(ConfigError, match="Unknown gap-fill method"):
        GapfillConfig(method="kriging")


def test_context_halo_is_what_the_method_reads_around_a_pixel():
    assert context_halo(GapfillConfig()) == context_halo(GapfillConfig(method="whittaker")) == 0
    assert context_halo(GapfillConfig(method="ridge", ridge=RidgeConfig(window=7))) == 3
    assert context_halo(GapfillConfig(method="fusion")) == 0  # no model yet
    model = SimpleNamespace(context_radius=5)
    assert context_halo(GapfillConfig(method="fusion"), model) == 5
