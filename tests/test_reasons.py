"""No NaN without a reason: every empty season slot says why (``season_reason``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from fusecube.config import CubeSource, RunConfig
from fusecube.cube import NDVI, NDVI_SMOOTH, PADDY_MASK
from fusecube.kernels.season_reasons import (
    AMPLITUDE_BELOW_THRESHOLD,
    CUT_BY_SERIES_EDGE,
    IMPLAUSIBLE_LENGTH_OR_PEAK,
    NOT_PADDY,
    REASON_FLAGS,
    TOO_FEW_OBSERVATIONS,
    season_reasons,
    years_cut,
)
from fusecube.runner import run
from fusecube.stages.phenology import PhenologyConfig, phenology
from fusecube.stages.provenance import NDVI_SIGMA
from fusecube.stages.season_extras import SEASON_REASON, season_extras


def test_reason_flags_combine_per_slot():
    has = np.array([[True, False], [False, False], [False, False], [False, False]])
    got = season_reasons(
        has, np.array([0, 0]), paddy=np.array([True, True, True, False]),
        analysed=np.array([True, True, True, True]),
        observed_per_year=np.array([[20], [2], [20], [20]]), dates_per_year=np.array([30]),
        cut=np.array([False]), rejected_per_year=np.array([[0], [0], [1], [0]]))
    assert got.tolist() == [[0, AMPLITUDE_BELOW_THRESHOLD],
                            [TOO_FEW_OBSERVATIONS] * 2,
                            [IMPLAUSIBLE_LENGTH_OR_PEAK] * 2,
                            [NOT_PADDY] * 2]
    edge = season_reasons(has[:1], np.array([0, 0]), paddy=np.array([True]),
                          analysed=np.array([True]), observed_per_year=np.array([[2]]),
                          dates_per_year=np.array([30]), cut=np.array([True]),
                          rejected_per_year=np.array([[0]]))
    assert edge.tolist() == [[0, TOO_FEW_OBSERVATIONS | CUT_BY_SERIES_EDGE]]


def test_years_cut_by_the_series():
    days = (pd.date_range("2023-01-05", "2024-12-25", freq="10D").values
            .astype("datetime64[D]").astype(float))
    # agricultural years from November: 2022/23 starts before the series, 2024/25 ends after
    assert years_cut(days, [2022, 2023, 2024], 11).tolist() == [True, False, True]


def _block() -> xr.Dataset:
    """Four pixels over two agricultural years: good rice, flat, a too-short season, not paddy."""
    times = pd.date_range("2022-11-06", periods=61, freq="12D").values
    days = (times - times[0]) / np.timedelta64(1, "D")

    def bump(centre, width):
        return 0.2 + 0.6 * np.exp(-0.5 * ((days - centre) / width) ** 2)

    good = np.maximum.reduce([bump(c, 25) for c in (120, 300, 480, 660)])
    short = 0.2 + 0.6 * np.exp(-0.5 * ((days - 200) / 5) ** 2)  # ~15 days long: implausible
    curves = np.stack([good, np.full(days.size, 0.25), short, good])[None]  # (y=1, x=4, t)
    observed = curves.copy()
    dims = ("y", "x", "time")
    coords = {"time": times, "y": [0.0], "x": [0.0, 1.0, 2.0, 3.0]}
    return xr.Dataset({
        NDVI_SMOOTH: (dims, curves.astype(np.float32)),
        NDVI: (dims, observed.astype(np.float32)),
        NDVI_SIGMA: (dims, np.full(curves.shape, 0.02, np.float32)),
        PADDY_MASK: (("y", "x"), np.array([[1, 1, 1, 0]], np.uint8)),
    }, coords=coords).transpose("time", "y", "x")


@pytest.mark.parametrize("explain", [True, False])
def test_stage_names_the_reason_of_each_empty_slot(explain):
    """Rejected seasons counted by the detection itself, or found again with relaxed rules."""
    block = _block()
    config = PhenologyConfig(seasons_per_year=3, explain=explain)
    seasons = season_extras(block, phenology(block, config=config), config=config)
    assert "dropped_seasons" not in seasons
    reason = seasons[SEASON_REASON].values[:, 0, :]  # (season, x)
    pos = seasons["pos"].values[:, 0, :]
    assert seasons[SEASON_REASON].dtype == np.uint8
    assert list(seasons[SEASON_REASON].attrs["flag_masks"]) == list(REASON_FLAGS.values())
    assert np.array_equal(reason == 0, ~np.isnat(pos))
    assert (reason[:, 0][np.isnat(pos[:, 0])] & AMPLITUDE_BELOW_THRESHOLD).all()
    assert (reason[:, 1] & AMPLITUDE_BELOW_THRESHOLD).all()  # flat: no rise of 0.15
    assert (reason[:, 2] & IMPLAUSIBLE_LENGTH_OR_PEAK).any()  # found, then dropped as too short
    assert (reason[:, 3] == NOT_PADDY).all()
    pm = seasons["sos_pm_days"].values[:, 0, 0]
    assert np.array_equal(np.isfinite(pm), ~np.isnat(pos[:, 0]))


@pytest.fixture(scope="module")
def result(small_scene, tmp_path_factory):
    out = tmp_path_factory.mktemp("reasons") / "run"
    return xr.open_zarr(run(RunConfig(source=CubeSource(path=small_scene["cube"]), out=out,
                                      report=False, gapfill="linear")).result)


def test_no_unexplained_nan_over_paddy_pixels(result):
    paddy = result[PADDY_MASK].values > 0
    empty = np.isnat(result["pos"].values)  # (season, y, x)
    reason = result[SEASON_REASON].values
    unexplained = empty & paddy[None] & (reason == 0)
    assert unexplained.sum() == 0
    assert (empty & paddy[None]).sum() > 0  # there are empty paddy slots to explain
    assert np.all(reason[:, ~paddy] == NOT_PADDY)
    assert np.all(reason[~empty] == 0)


def test_main_reason_picks_the_input_before_the_curve():
    from fusecube.products.season_reasons import CATEGORIES, main_reason

    codes = main_reason(np.array([0, AMPLITUDE_BELOW_THRESHOLD,
                                  AMPLITUDE_BELOW_THRESHOLD | TOO_FEW_OBSERVATIONS,
                                  IMPLAUSIBLE_LENGTH_OR_PEAK | CUT_BY_SERIES_EDGE, NOT_PADDY],
                                 np.uint8))
    assert [CATEGORIES[c] for c in codes] == [
        "season found", "amplitude below threshold", "too few observations",
        "cut by series edge", "not paddy"]
