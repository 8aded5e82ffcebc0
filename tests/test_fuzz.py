"""A fuzz over small cubes: every odd cube ends in a fusecube error or in a valid result.

Hypothesis draws a cube's dtypes, dims order, NaN pattern, time axis and units; the cube is
written with :func:`fusecube.cube.write_cube` (xarray directly where write_cube refuses it),
then ``fusecube check`` and a small run go over it in-process. The only allowed outcomes are
a :class:`~fusecube.errors.FusecubeError` or a result that passes ``validate_cube``, has NDVI
only where the input observed something, and keeps every layer inside its physical range.
"""

from __future__ import annotations

import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from odc.geo.geobox import GeoBox

from fusecube.cli import main
from fusecube.config import CubeSource, RunConfig
from fusecube.cube import (
    DIMS,
    NDVI,
    NDVI_FUSED,
    NDVI_SMOOTH,
    PADDY_MASK,
    VH,
    VV,
    validate_cube,
    with_geobox,
    write_cube,
)
from fusecube.errors import FusecubeError
from fusecube.runner import run

SIZE, PERIODS, STEP_DAYS = 16, 30, 12
INT16_MISSING = -32768


#: Ways a cube departs from the float32 (time, y, x) model with linear S1, NDVI in [-1, 1] and
#: sorted naive dates. An example has at most one, so half of them reach a whole run.
DEPARTURES = ("float64 ndvi", "int16 ndvi", "uint16 s1", "y, x, time", "ndvi x10000",
              "duplicated times", "unsorted times", "1970 times", "tz-aware times")


@dataclass(frozen=True)
class Shape:
    """What one fuzz example varies."""

    departure: str | None
    irregular: bool
    s1_db: bool
    s1_label: str | None
    gaps: str
    seed: int


shapes = st.builds(
    Shape,
    departure=st.sampled_from((None,) * len(DEPARTURES) + DEPARTURES),
    irregular=st.booleans(),
    s1_db=st.booleans(),
    s1_label=st.sampled_from([None, "1", "dB"]),
    gaps=st.sampled_from(["none", "clouds", "empty_periods", "empty_pixels", "all"]),
    seed=st.integers(0, 2**16),
)


def time_axis(shape: Shape, rng: np.random.Generator) -> pd.DatetimeIndex:
    start = pd.Timestamp("1970-01-05" if shape.departure == "1970 times" else "2023-01-05")
    steps = rng.integers(3, 25, PERIODS - 1) if shape.irregular else np.full(PERIODS - 1, STEP_DAYS)
    times = start + pd.to_timedelta(np.concatenate([[0], np.cumsum(steps)]), unit="D")
    if shape.departure == "duplicated times":
        return times.delete(5).insert(5, times[4])
    if shape.departure == "unsorted times":
        return times[rng.permutation(PERIODS)]
    if shape.departure == "tz-aware times":
        return times.tz_localize("Asia/Jakarta")
    return times


def rice_ndvi(times: pd.DatetimeIndex, rng: np.random.Generator) -> np.ndarray:
    """Two rice seasons a year on every pixel, with a little noise: (time, y, x)."""
    doy = np.asarray(times.day_of_year, dtype=float)
    curve = 0.2 + 0.6 * np.clip(np.sin(2 * np.pi * doy / 183.0), 0, None)
    return curve[:, None, None] + rng.normal(0, 0.02, (len(times), SIZE, SIZE))


def with_gaps(ndvi: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    ndvi = ndvi.copy()
    if kind != "none":
        ndvi[rng.random(ndvi.shape) < 0.3] = np.nan
    if kind == "empty_periods":
        ndvi[rng.choice(PERIODS, 4, replace=False)] = np.nan
    if kind == "empty_pixels":
        ndvi[:, rng.random((SIZE, SIZE)) < 0.2] = np.nan
    if kind == "all":
        ndvi[:] = np.nan
    return ndvi


def stored_ndvi(ndvi: np.ndarray, shape: Shape) -> np.ndarray:
    if shape.departure == "int16 ndvi":  # the usual integer export: NDVI x 10000, a nodata value
        return np.where(np.isfinite(ndvi), np.round(ndvi * 10000), INT16_MISSING).astype(np.int16)
    if shape.departure == "ndvi x10000":
        return (ndvi * 10000).astype(np.float32)
    return ndvi.astype(np.float64 if shape.departure == "float64 ndvi" else np.float32)


def stored_backscatter(linear: np.ndarray, shape: Shape) -> np.ndarray:
    db = 10 * np.log10(linear)
    if shape.departure == "uint16 s1":  # openEO GFMap's compression: 10 ** ((dB + 83) / 20), no attributes
        return np.round(10 ** ((db + 83) / 20)).astype(np.uint16)
    return (db if shape.s1_db else linear).astype(np.float32)


def make_cube(shape: Shape) -> tuple[xr.Dataset, np.ndarray]:
    """The cube to write and the ``(y, x)`` pixels where it observed any NDVI."""
    rng = np.random.default_rng(shape.seed)
    times = time_axis(shape, rng)
    ndvi = with_gaps(rice_ndvi(times, rng), shape.gaps, rng)
    vv = rng.uniform(0.02, 0.3, (PERIODS, SIZE, SIZE))
    attrs = {} if shape.s1_label is None else {"units": shape.s1_label}
    data = {
        NDVI: (DIMS, stored_ndvi(ndvi, shape)),
        VV: (DIMS, stored_backscatter(vv, shape), attrs),
        VH: (DIMS, stored_backscatter(vv / 4, shape), attrs),
        PADDY_MASK: (("y", "x"), np.ones((SIZE, SIZE), np.uint8)),
    }
    ds = xr.Dataset(data, coords={"time": times})
    gbox = GeoBox.from_bbox((450000, 9220000, 450000 + 10 * SIZE, 9220000 + 10 * SIZE),
                            crs="EPSG:32749", resolution=10)
    ds = with_geobox(ds, gbox)
    if shape.departure == "y, x, time":
        ds = ds.transpose("y", "x", "time")
    return ds, np.isfinite(ndvi).any(axis=0)


def write_input(ds: xr.Dataset, path: Path) -> None:
    """Write ``ds`` with write_cube, or as plain xarray would where write_cube refuses it cleanly."""
    try:
        write_cube(ds, path)
        return
    except FusecubeError:
        pass
    encoding = {}
    index = ds.indexes["time"]
    if index.tz is not None:  # on disk a time zone survives only in the CF units
        encoding = {"time": {"units": f"hours since {index[0].isoformat()}", "dtype": "int64"}}
        ds = ds.assign_coords(time=index.tz_convert(None))
    ds.to_zarr(path, mode="w", zarr_format=3, consolidated=False, encoding=encoding)


def check_cli(path: Path) -> None:
    """``fusecube check`` in-process: exit 0, or a non-zero exit caused by a fusecube error."""
    with pytest.raises(SystemExit) as info:
        main(["check", str(path)])
    if info.value.code not in (0, None):
        assert isinstance(info.value.__context__, FusecubeError), repr(info.value.__context__)


#: Physical ranges of the result layers (finite values only).
RANGES = {NDVI_FUSED: (-1, 1), NDVI_SMOOTH: (-1, 1), "peak_value": (-1, 1), "base_value": (-1, 1),
          "amplitude": (0, 2), "season_count": (0, 12), "length": (0, 366)}


def assert_valid_result(result_path: Path, observed: np.ndarray) -> None:
    result = xr.open_zarr(result_path, consolidated=False).load()
    validate_cube(result, required=(NDVI_FUSED, NDVI_SMOOTH))
    for name in (NDVI_FUSED, NDVI_SMOOTH):
        filled = np.isfinite(result[name].transpose(*DIMS).values).any(axis=0)
        made_up = filled & ~observed
        assert not made_up.any(), f"{name} has values at {int(made_up.sum())} never-observed pixels"
    for name, var in result.data_vars.items():
        if not np.issubdtype(var.dtype, np.floating):
            continue
        values = var.values[np.isfinite(var.values)]
        low, high = (1, 366) if name.endswith("_doy") else RANGES.get(name, (-np.inf, np.inf))
        assert not np.isinf(var.values).any(), f"{name} holds inf"
        assert values.size == 0 or (values.min() >= low and values.max() <= high), \
            f"{name} spans {values.min()}..{values.max()}, outside [{low}, {high}]"


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(shape=shapes)
def test_odd_cubes_end_in_an_error_or_a_valid_result(shape):
    ds, observed = make_cube(shape)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("always")  # a warning is an allowed outcome here, not a failure
        path = Path(tmp) / "cube.zarr"
        write_input(ds, path)
        check_cli(path)
        config = RunConfig(source=CubeSource(path=path), out=Path(tmp) / "out", gapfill="linear",
                           report=False, block_size=16, ledger=str(Path(tmp) / "ledger.sqlite"))
        try:
            outcome = run(config)
        except FusecubeError:
            return
        assert_valid_result(outcome.result, observed)
