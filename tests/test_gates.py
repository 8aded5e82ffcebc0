"""Quality gates: each gate passes on the clean scene and fails on the defect it is for."""

from __future__ import annotations

import hashlib
import json
import warnings

import numpy as np
import pytest
import xarray as xr

from fusecube.config import RunConfig
from fusecube.cube import NDVI, NDVI_SMOOTH, PADDY_MASK, TIME, VH, VV, read_cube
from fusecube.errors import GateFailed, OutputWriteError
from fusecube.quality.gates import (
    GateThresholds,
    PeriodScreen,
    apply_screen,
    input_gates,
    quality_report,
    screen_periods,
    stage_gates,
    stage_results,
)
from fusecube.runner.pipeline import StageTimer, process_block


@pytest.fixture(scope="module")
def cube(small_scene) -> xr.Dataset:
    return read_cube(small_scene["cube"]).load()


@pytest.fixture(scope="module")
def truth(small_scene) -> xr.Dataset:
    return read_cube(small_scene["truth"])


@pytest.fixture(scope="module")
def clean(cube, truth) -> xr.Dataset:
    """The scene without its planted defect (the all-zero period becomes unobserved)."""
    out = cube.copy()
    zero = int(truth.attrs["zero_period"])
    out[NDVI] = cube[NDVI].where(cube[TIME] != cube[TIME][zero])
    return out


def gates_of(ds: xr.Dataset, **kwargs) -> dict[str, dict]:
    screen, _ = input_gates(ds, **kwargs)
    return {g["gate"]: g for g in screen.gates}


def test_clean_scene_passes_every_input_gate(clean):
    gates = gates_of(clean)
    assert len(gates) == 19
    assert {g["status"] for g in gates.values()} <= {"pass", "warn"}, {
        k: g["message"] for k, g in gates.items() if g["status"] not in ("pass", "warn")}
    # the fully clouded period is reported (warn), not a failure
    assert gates["s2_valid_fraction"]["status"] == "warn"
    # strict mode lets a clean cube through
    input_gates(clean, strict=True)


def test_zero_period_found_masked_and_strict_stops(cube, truth):
    zero = int(truth.attrs["zero_period"])
    screen = screen_periods(cube)
    assert screen.zero_periods == [zero]
    assert screen.valid_fraction[zero] == 0.0
    fully_clouded = [i for i in range(cube.sizes[TIME])
                     if not np.isfinite(cube[NDVI].isel(time=i).values).any()]
    assert screen.empty_periods == sorted([*fully_clouded, zero])
    screened = apply_screen(cube, screen)
    assert np.isnan(screened[NDVI].isel(time=zero).values).all()
    others = [i for i in range(cube.sizes[TIME]) if i != zero]
    xr.testing.assert_identical(screened[NDVI].isel(time=others), cube[NDVI].isel(time=others))
    day = np.datetime_as_string(cube[TIME].values[zero], unit="D")
    with pytest.raises(GateFailed, match=f"ndvi_zero_periods.*{zero} \\({day}\\).*Fix:") as info:
        screen_periods(cube, strict=True)
    assert info.value.gate == "ndvi_zero_periods" and info.value.value == 1.0


@pytest.mark.parametrize("shift", [(2, 0), (0, -1), (1, 1)])
def test_misaligned_s1_s2_grids_found_with_their_shift(clean, shift):
    moved = clean.copy()
    moved[NDVI] = clean[NDVI].shift(y=shift[0], x=shift[1])
    gate = gates_of(moved)["s1_s2_alignment"]
    assert gate["status"] == "fail"
    assert f"= {shift}" in gate["message"]


def test_time_axis_gates(clean):
    times = clean[TIME].values
    shifted = clean.assign_coords({TIME: times + np.timedelta64(365, "D")})
    gates = gates_of(shifted)
    assert gates["time_in_periods"]["status"] == "fail"
    assert gates["time_monotonic"]["status"] == "pass"
    gates = gates_of(clean, thresholds=GateThresholds(expected_years=(2024, 2025)))
    first_year = [i for i, t in enumerate(times) if str(t)[:4] == "2023"]
    assert gates["time_expected_years"]["status"] == "fail"
    assert gates["time_expected_years"]["periods"] == first_year
    epoch = clean.drop_vars("period_start").assign_coords(
        {TIME: times - np.datetime64("2023-11-01", "ns") + np.datetime64("1970-01-01", "ns")})
    assert gates_of(epoch)["time_expected_years"]["status"] == "fail"
    gap = clean.isel(time=[i for i in range(clean.sizes[TIME]) if i != 20])
    gates = gates_of(gap)
    assert gates["time_regular"]["status"] == "fail"
    assert gates["time_regular"]["periods"] == [20]
    assert gates["time_regular"]["value"] == pytest.approx(12.0)
    backwards = clean.isel(time=slice(None, None, -1))
    gates = gates_of(backwards)
    assert gates["time_monotonic"]["status"] == "fail"
    assert len(gates["time_monotonic"]["periods"]) == clean.sizes[TIME] - 1


def test_value_gates_mask_what_they_report(clean):
    bad = clean.copy(deep=True)
    bad[NDVI][3, 5, 7] = -np.inf
    bad[NDVI][4, 1:3, 2] = 1.7
    bad[VV][6, 0, 0] = -9999.0
    bad[VH] = bad[VH].where(bad[TIME] != bad[TIME][9], 0.0)  # a constant (all-zero) VH period
    screen, _ = input_gates(bad)
    gates = {g["gate"]: g for g in screen.gates}
    assert gates["ndvi_finite"]["pixels"] == 1 and gates["ndvi_finite"]["status"] == "fail"
    assert gates["ndvi_range"]["pixels"] == 2
    assert gates["vv_finite"]["pixels"] == 1
    assert gates["vh_constant_periods"]["periods"] == [9]
    assert screen.s1_valid_fraction[9] == 0.0
    assert gates["s1_valid_fraction"]["periods"] == [9]
    out = apply_screen(bad, screen)
    assert np.isnan(out[NDVI][3, 5, 7]) and np.isnan(out[NDVI][4, 1:3, 2]).all()
    assert np.isnan(out[VV][6, 0, 0]) and np.isnan(out[VH][9]).all()
    untouched = np.isfinite(bad[NDVI].values) & np.isfinite(out[NDVI].values)
    assert untouched.sum() == np.isfinite(bad[NDVI].values).sum() - 2  # the two 1.7 values
    np.testing.assert_array_equal(out[NDVI].values[untouched], bad[NDVI].values[untouched])


def test_backscatter_in_db_is_recognised(clean):
    db = clean.copy()
    db[VV] = 10 * np.log10(clean[VV])
    with pytest.raises(GateFailed, match="looks like dB") as info:  # refused in every mode
        gates_of(db)
    assert info.value.gate == "vv_range" and "10 ** (db / 10)" in str(info.value)


def test_coverage_and_gap_gates(clean):
    tiny = xr.zeros_like(clean[PADDY_MASK])
    tiny[0, 0] = 1
    gate = gates_of(clean, mask=tiny)["paddy_coverage"]
    assert gate["status"] == "fail" and gate["pixels"] == 1
    assert gates_of(clean, mask=None)["paddy_coverage"]["status"] == "skip"
    cloudy = clean.copy()
    hidden = (np.arange(clean.sizes[TIME]) >= 10) & (np.arange(clean.sizes[TIME]) < 19)
    cloudy[NDVI] = clean[NDVI].where(xr.DataArray(~hidden, dims=TIME))
    gate = gates_of(cloudy)["s2_longest_gap"]
    assert gate["status"] == "fail" and gate["periods"] == list(range(10, 19))
    assert gate["value"] == pytest.approx(9 * 12)
    half = clean.copy(deep=True)
    half[VV][30, :24] = np.nan
    gate = gates_of(half)["s1_valid_fraction"]
    assert gate["periods"] == [30] and gate["value"] == pytest.approx(0.5)


def seasons_fixture() -> xr.Dataset:
    """Two years x two slots on a 1 x 3 grid, every season plausible."""
    sos = np.datetime64("2024-01-01", "ns") + np.arange(4)[:, None, None] * np.timedelta64(120, "D")
    sos = np.broadcast_to(sos, (4, 1, 3)).copy()
    ds = xr.Dataset(
        {"sos": (("season", "y", "x"), sos),
         "pos": (("season", "y", "x"), sos + np.timedelta64(40, "D")),
         "eos": (("season", "y", "x"), sos + np.timedelta64(90, "D")),
         "length": (("season", "y", "x"), np.full((4, 1, 3), 90.0, np.float32)),
         "peak_value": (("season", "y", "x"), np.full((4, 1, 3), 0.8, np.float32)),
         "season_count": (("year", "y", "x"), np.full((2, 1, 3), 2.0, np.float32))},
        coords={"season": np.arange(4), "season_year": ("season", [2023, 2023, 2024, 2024]),
                "year": [2023, 2024], "y": [0.0], "x": [0.0, 1.0, 2.0]})
    return ds


def test_phenology_gates_remove_implausible_seasons():
    times = np.datetime64("2023-11-07", "ns") + np.arange(62) * np.timedelta64(12, "D")
    ds = seasons_fixture()
    out, results = stage_gates("phenology", ds, times=times, period_days=12)
    assert all(r.status == "pass" for r in results)
    xr.testing.assert_identical(out, ds)
    ds["length"][1, 0, 0] = -5.0  # negative length
    ds["length"][2, 0, 1] = 400.0  # implausibly long
    ds["eos"][3, 0, 2] = np.datetime64("2031-01-01", "ns")  # outside the series
    ds["peak_value"][0, 0, 2] = 1.4
    screen = PeriodScreen()
    out, results = stage_gates("phenology", ds, times=times, period_days=12, screen=screen)
    status = {r.gate: (r.status, r.pixels) for r in results}
    assert status["season_length"] == ("fail", 2)
    assert status["season_dates_in_series"] == ("fail", 1)
    assert status["season_ndvi_range"] == ("fail", 1)
    assert status["season_dates_ordered"] == ("pass", 0)
    assert np.isnan(out["length"][1, 0, 0]) and np.isnat(out["sos"][2, 0, 1].values)
    # season_count drops by the seasons removed in each year
    np.testing.assert_array_equal(out["season_count"].values[:, 0, :],
                                  [[1, 2, 1], [2, 1, 1]])
    assert screen.stage_counts["phenology:season_length"] == 2
    with pytest.raises(GateFailed, match="season_length.*x=0"):
        stage_gates("phenology", ds, times=times, period_days=12, strict=True)


def test_smooth_range_gate(clean):
    block = clean.isel(y=slice(0, 4), x=slice(0, 4)).copy()
    block[NDVI_SMOOTH] = xr.full_like(block[NDVI], 0.5)
    block[NDVI_SMOOTH][5, 1, 2] = 1.2
    out, (result,) = stage_gates("smooth", block)
    assert result.status == "fail" and result.pixels == 1 and "1.2" not in result.gate
    assert np.isnan(out[NDVI_SMOOTH][5, 1, 2]) and int(np.isnan(out[NDVI_SMOOTH]).sum()) == 1


def test_process_block_records_stage_gates_and_strict(cube, clean):
    screen = screen_periods(cube)
    series, seasons = process_block(cube, RunConfig(gapfill="linear"), screen, StageTimer())
    assert {"gapfill:ndvi_fused_range", "gapfill:ndvi_fused_complete", "smooth:ndvi_smooth_range",
            "phenology:season_length"} <= set(screen.stage_counts)
    assert all(v == 0 for v in screen.stage_counts.values())  # the pipeline output is sane
    assert {r.gate for r in stage_results(screen)} >= {"season_length", "ndvi_smooth_range"}
    lengths = seasons["length"].values
    assert np.nanmin(lengths) >= 40 and np.nanmax(lengths) <= 200
    with pytest.raises(GateFailed, match="ndvi_zero_periods"):
        process_block(cube, RunConfig(strict=True, gapfill="linear"), screen, StageTimer())
    process_block(clean, RunConfig(strict=True, gapfill="linear"), screen_periods(clean),
                  StageTimer())


def test_quality_report_json_html_and_atomic_write(cube, tmp_path, monkeypatch):
    from fusecube.quality.diagnostics import quality_html, write_diagnostics

    report, arrays, mask = quality_report(cube, source="scene48")
    out = tmp_path / "quality"
    paths = write_diagnostics(report, arrays, mask, out)
    data = json.loads(paths["json"].read_text())
    assert [g["gate"] for g in data["gates"]] == [g.gate for g in report.gates]
    assert data["summary"]["fail"] == 1 and data["mask"]["pixels"] == int(mask.sum())
    for name in ("valid_fraction", "availability", "mask_overlay"):
        assert paths[name].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    fragment = quality_html(report, {k: paths[k] for k in ("valid_fraction", "availability")})
    assert fragment.count("<img") == 2 and "ndvi_zero_periods" in fragment
    assert "|" in report.to_markdown().splitlines()[2]
    # a failing write (disk full) leaves the previous diagnostics untouched
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.iterdir()}

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("fusecube.quality.gates.QualityReport.write_json", disk_full)
    with pytest.raises(OutputWriteError, match="No space left"):
        write_diagnostics(report, arrays, mask, out)
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.iterdir()}
    assert after == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".quality")]


def test_write_run_quality_uses_the_recorded_gates(small_scene, cube, tmp_path):
    from types import SimpleNamespace

    from fusecube.quality.diagnostics import write_run_quality
    from fusecube.runner.inputs import resolve_mask, run_inputs, screen_inputs

    config = RunConfig(mask=str(small_scene["blocks"]))
    mask, mask_report = resolve_mask(config, cube)
    screen = screen_inputs(config, cube, mask)
    screen.stage_counts = {"smooth:ndvi_smooth_range": 0, "phenology:season_length": 3}
    inputs = run_inputs(config, small_scene["cube"], None, mask, mask_report, screen)
    path, fragment = write_run_quality(SimpleNamespace(out=tmp_path), inputs, config)
    data = json.loads(path.read_text())
    status = {g["gate"]: g["status"] for g in data["gates"]}
    assert status["season_length"] == "fail" and status["ndvi_smooth_range"] == "pass"
    assert status["ndvi_zero_periods"] == "fail" and len(data["gates"]) == 21
    assert data["mask"]["source"].endswith("blocks.gpkg")
    assert fragment.startswith("<h2>Quality gates</h2>") and fragment.count("<img") == 3


def test_gapfill_completeness_gate(clean):
    block = clean.isel(y=slice(0, 10), x=slice(0, 10)).copy(deep=True)
    block["ndvi_fused"] = xr.full_like(block[NDVI], 0.4)
    block[PADDY_MASK][:] = 1
    out, results = stage_gates("gapfill", block)
    assert [r.status for r in results] == ["pass", "pass"]
    block["ndvi_fused"][:, 3, 4] = np.nan  # 1 of 100 paddy pixels never filled: reported
    screen = PeriodScreen()
    _, results = stage_gates("gapfill", block, screen=screen)
    complete = results[1]
    assert complete.status == "warn" and complete.pixels == 1 and "x=" in complete.message
    block["ndvi_fused"][:, 5, :] = np.nan  # 11 % of the paddy: a failure
    _, results = stage_gates("gapfill", block, screen=screen)
    assert results[1].status == "fail" and results[1].pixels == 11
    with pytest.raises(GateFailed, match="ndvi_fused_complete"):
        stage_gates("gapfill", block, strict=True)
    block[PADDY_MASK][5, :] = 0  # outside the paddy, gaps do not count
    _, results = stage_gates("gapfill", block)
    assert results[1].pixels == 1
    reported = {r.gate: (r.status, r.pixels) for r in stage_results(screen)}
    assert reported["ndvi_fused_complete"] == ("fail", 12)
    assert reported["ndvi_fused_range"] == ("pass", 0)


def test_block_statistics_match_numpy_on_any_chunking(clean, monkeypatch):
    from fusecube.quality.gates import variable_stats

    monkeypatch.setattr("fusecube.quality.stats.COMPOSITE_EDGE", 10)  # 48 px → every 5th pixel
    ndvi = clean[NDVI].chunk({"time": -1, "y": 16, "x": 16})  # block edges not multiples of 5
    stats = variable_stats({"ndvi": (ndvi, -1.0, 1.0, True)})["ndvi"]
    values = clean[NDVI].values
    valid = np.isfinite(values)
    assert stats["composite_step"] == 5
    sub = np.where(valid & (values != 0), values, np.nan)[:, ::5, ::5]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices (clouded periods)
        expected = np.nanmean(sub, axis=0)
        vmin = np.nanmin(values, axis=(1, 2))
    np.testing.assert_allclose(stats["composite"], expected, rtol=1e-6)
    np.testing.assert_allclose(stats["row_valid"], valid.mean(axis=2))
    np.testing.assert_array_equal(stats["n_valid"], valid.sum(axis=(1, 2)))
    np.testing.assert_allclose(stats["vmin"], vmin, equal_nan=True)


def test_grids_gate_names_what_differs(clean):
    from fusecube.quality.gates import grids_gate

    s1, s2 = clean[[VV, VH]], clean[[NDVI]]
    assert grids_gate(s1, s2).status == "pass"
    half_pixel = s2.assign_coords(x=s2["x"] + 25.0)
    result = grids_gate(s1, half_pixel)
    assert result.status == "fail" and "(dy, dx) = (0, 0.5) pixels" in result.message
    assert "shape" in grids_gate(s1, s2.isel(y=slice(1, None))).message
    geographic = s2.odc.reproject("EPSG:4326")
    assert "CRS" in grids_gate(s1, geographic).message
    assert "time axes differ" in grids_gate(s1, s2.isel(time=slice(1, None))).message
    with pytest.raises(GateFailed, match="s1_s2_grids"):
        grids_gate(s1, half_pixel, strict=True)
