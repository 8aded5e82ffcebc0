"""The validated gap-fill choice: radar methods are used only where they beat the optical baseline."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import xarray as xr

from fusecube.config import CubeSource, RunConfig
from fusecube.cube import NDVI, NDVI_FUSED, VH, VV, read_cube
from fusecube.evaluate.choice import MIN_RADAR_GAIN, decide, fusion_score
from fusecube.evaluate.selection import MethodScore, SelectionConfig, score_candidates
from fusecube.fusion.ridge.model import fuse_ridge
from fusecube.quality.gates import apply_screen, screen_periods
from fusecube.runner import run

FAST = SelectionConfig(window=24, windows=4, resamples=200)


@pytest.fixture(scope="module")
def cube(small_scene):
    cube = read_cube(small_scene["cube"]).load()
    return apply_screen(cube, screen_periods(cube))


def radar_without_skill(cube: xr.Dataset) -> xr.Dataset:
    """The same cube with S1 that knows nothing of the crop: each pixel's radar series comes
    from another pixel, shuffled in time (backscatter statistics kept, NDVI link removed)."""
    rng = np.random.default_rng(5)
    out = cube.copy()
    t, ny, nx = cube[VV].shape
    pixels = rng.permutation(ny * nx)
    order = rng.permutation(t)
    for name in (VV, VH):
        values = cube[name].values.reshape(t, -1)[order][:, pixels].reshape(t, ny, nx)
        out[name] = (cube[name].dims, values, cube[name].attrs)
    return out


def test_radar_that_follows_the_crop_is_chosen_with_an_interval(cube):
    scores, hidden = score_candidates(cube, ["linear", "whittaker", "ridge"], lam=1.0,
                                      mask=cube["paddy_mask"], config=FAST)
    by = {s.method: s for s in scores}
    assert by["ridge"].rmse < by["linear"].rmse
    assert by["ridge"].low <= by["ridge"].rmse <= by["ridge"].high
    assert by["ridge"].wins["linear"] >= 0.8 and "linear" not in by["linear"].wins
    assert set(by["ridge"].by_scheme) == {"dates", "spans"}
    assert set(by["ridge"].by_stratum) == {"paddy", "other"}
    assert hidden["values"]["dates"] > 0 and hidden["values"]["spans"] > 0
    assert len(hidden["held_dates"]) == FAST.repeats and all(hidden["held_dates"])
    choice = decide("auto", scores, FAST, hidden)
    assert by["ridge"].win_share == by["ridge"].wins["linear"]
    assert choice.chosen == "ridge" and choice.baseline == "linear"
    assert "better than linear" in choice.verdict
    # the radar check: the same ridge on radar shuffled between pixels does much worse
    check = by["ridge"].params
    assert check["rmse_radar_shuffled"] > by["ridge"].rmse * 1.1
    assert check["radar_gain"] > 10 and check["radar_wins"] >= 0.8
    assert f"S1 brings {check['radar_gain']:.0f} %" in choice.verdict


def test_radar_without_skill_loses_its_margin_and_the_choice_never_loses_to_the_baseline(cube):
    methods = ["linear", "whittaker", "ridge"]
    skilled, _ = score_candidates(cube, methods, lam=1.0, config=FAST)
    blind, hidden = score_candidates(radar_without_skill(cube), methods, lam=1.0, config=FAST)

    def gain(scores):
        by = {s.method: s for s in scores}
        return 1 - by["ridge"].rmse / by["linear"].rmse

    assert gain(blind) < gain(skilled) - 0.1  # what S1 brought on this scene
    for requested in ("auto", "ridge"):
        choice = decide(requested, blind, FAST, hidden)
        by = {s.method: s for s in blind}
        assert by[choice.chosen].rmse <= by[choice.baseline].rmse


def test_a_baseline_asked_for_is_used_and_the_better_radar_named(cube):
    scores, hidden = score_candidates(cube, ["linear", "whittaker", "ridge"], lam=1.0, config=FAST)
    choice = decide("whittaker", scores, FAST, hidden)
    assert choice.chosen == "whittaker"
    assert "ridge validated" in choice.reason and "auto would use it" in choice.reason


def test_a_gain_without_radar_skill_is_credited_to_the_optical_model(tmp_path):
    """On a scene whose radar says nothing about its pixels (skill 0: neither level nor timing),
    ridge may still beat linear through its model of the optical series; the radar check sees
    that S1 brings nothing and the verdict says so."""
    from fusecube.sources.synthetic.scene import SceneConfig
    from fusecube.sources.synthetic.writer import synthesize

    paths = synthesize(SceneConfig(width=48, height=48, seed=3, radar_skill=0.0), tmp_path)
    blind = read_cube(paths["cube"]).load()
    blind = apply_screen(blind, screen_periods(blind))
    scores, hidden = score_candidates(blind, ["linear", "whittaker", "ridge"], lam=1.0, config=FAST)
    by = {s.method: s for s in scores}
    assert abs(by["ridge"].params["radar_gain"]) < MIN_RADAR_GAIN
    choice = decide("auto", scores, FAST, hidden)
    assert choice.chosen == "ridge", "on this scene ridge's optical model beats linear"
    assert "S1 adds nothing" in choice.verdict and "optical model" in choice.verdict
    assert not choice.verdict.startswith("S1 fusion")
    off, _ = score_candidates(blind, ["linear", "ridge"], lam=1.0,
                              config=replace(FAST, radar_check=False))
    assert {s.method: s for s in off}["ridge"].params == {}
    assert {s.method: s.rmse for s in off} == {m: by[m].rmse for m in ("linear", "ridge")}


def test_the_verdict_credits_s1_only_with_the_radar_check_behind_it():
    base = MethodScore("linear", 0.100, 0.09, 0.11, 500)

    def ridge(gain, wins):
        return MethodScore("ridge", 0.080, 0.07, 0.09, 500, win_share=0.97,
                           params={"rmse_radar_shuffled": 0.080 / (1 - gain / 100),
                                   "radar_gain": gain, "radar_wins": wins})

    assert "S1 brings 15 %" in decide("auto", [base, ridge(15.0, 0.99)]).verdict
    for gain, wins in ((0.5, 0.99), (15.0, 0.6)):
        choice = decide("auto", [base, ridge(gain, wins)])
        assert choice.chosen == "ridge" and "S1 adds nothing" in choice.verdict
    worse = MethodScore("ridge", 0.105, 0.09, 0.12, 500, win_share=0.2,
                        params={"rmse_radar_shuffled": 0.110, "radar_gain": 4.6, "radar_wins": 1.0})
    lost = decide("auto", [base, worse])
    assert lost.chosen == "linear" and "radar is worth 5 % to ridge" in lost.reason


def test_the_rule_needs_confidence_not_just_a_lower_point_estimate():
    base = MethodScore("linear", 0.100, 0.09, 0.11, 500)
    lucky = MethodScore("ridge", 0.099, 0.08, 0.12, 500, win_share=0.55)
    sure = MethodScore("ridge", 0.080, 0.07, 0.09, 500, win_share=0.97)
    assert decide("auto", [base, lucky]).chosen == "linear"
    assert decide("auto", [base, sure]).chosen == "ridge"
    assert decide("ridge", [base, lucky]).chosen == "linear"
    forced = decide("ridge", [base, lucky], enforce=False)
    assert forced.chosen == "ridge" and "gapfill_enforce: false" in forced.reason


def test_fusion_is_scored_by_its_own_validation():
    def test(fusion, linear, whittaker):
        return {m: {"all": {"rmse": v}} for m, v in
                (("fusion", fusion), ("linear", linear), ("whittaker", whittaker))}

    good = fusion_score({"heldout_dates": test(0.05, 0.08, 0.09),
                         "heldout_spans": test(0.06, 0.09, 0.10), "n_pixels": 300})
    assert good.win_share == 1.0 and good.rmse == pytest.approx(0.055) and "validation" in good.note
    assert good.params == {}  # a model from before the radar check: nothing to credit
    bad = fusion_score({"heldout_dates": test(0.11, 0.05, 0.07)})
    assert bad.win_share == 0.0
    checked = {k: {**v, "fusion:radar-shuffled": {"all": {"rmse": r}}} for k, v, r in
               (("heldout_dates", test(0.05, 0.08, 0.09), 0.051),
                ("heldout_spans", test(0.06, 0.09, 0.10), 0.059))}
    blind = fusion_score(checked)
    assert blind.params["radar_wins"] == 0.0 and abs(blind.params["radar_gain"]) < 1
    verdict = decide("auto", [MethodScore("linear", 0.085, 0.08, 0.09, 300), blind]).verdict
    assert verdict.startswith("fusion:") and "S1 adds nothing" in verdict
    base = MethodScore("linear", 0.05, 0.04, 0.06, 100)
    assert decide("fusion", [base, bad]).chosen == "linear"
    assert fusion_score({}) is None


def test_ridge_learns_from_composites_whose_gaps_every_pixel_shares(cube):
    """Monthly-composite-like gaps: whole dates missing everywhere, no other pixel's clouds to
    borrow. Ridge must still train (no silent fallback to linear)."""
    comp = cube.copy()
    ndvi = cube[NDVI].values.copy()
    t = ndvi.shape[0]
    observed = np.isfinite(ndvi).mean(axis=(1, 2)) > 0.5
    ndvi[:] = np.where(observed[:, None, None], cube["ndvi_true"].values if "ndvi_true" in cube
                       else np.nan_to_num(ndvi, nan=np.nanmean(ndvi)), np.nan)
    ndvi[~observed] = np.nan
    comp[NDVI] = (cube[NDVI].dims, ndvi.astype(np.float32))
    assert (np.isfinite(ndvi).mean(axis=(1, 2)) % 1 == 0).all() and t > 10  # whole dates only
    filled = fuse_ridge(comp)
    assert filled[NDVI_FUSED].attrs["gapfill_method"] == "ridge"


def test_a_run_records_the_choice_in_run_json_and_the_report(small_scene, tmp_path):
    config = RunConfig(source=CubeSource(path=small_scene["cube"]), out=tmp_path / "out",
                       ledger=str(tmp_path / "l.sqlite"), block_size=24)
    assert config.gapfill == "auto"
    result = run(config)
    recorded = json.loads((tmp_path / "out" / "run.json").read_text())["gapfill"]
    assert recorded["requested"] == "auto" and recorded["chosen"] == result.gapfill["chosen"]
    assert {s["method"] for s in recorded["scores"]} == {"linear", "whittaker", "ridge"}
    out = read_cube(result.result)
    assert out[NDVI_FUSED].attrs["gapfill_method"].startswith(recorded["chosen"])
    page = (tmp_path / "out" / "report.html").read_text()
    assert "Gap-fill choice" in page and recorded["verdict"] in page


# ----------------------------------------------------------------------------- real data
def _real(name: str):
    from fusecube.testing.realdata import REAL_CUBES

    raw = REAL_CUBES[name]()
    return apply_screen(raw, screen_periods(raw))


def _lodo(cube, method: str) -> float:
    """Leave-one-date-out RMSE of ``method`` (each date with observations hidden whole)."""
    from fusecube.fusion.baselines import gapfill as baseline

    ndvi = cube[NDVI].values
    sse, n = 0.0, 0
    for t in np.flatnonzero(np.isfinite(ndvi).mean(axis=(1, 2)) >= 0.05):
        shown = cube.copy()
        keep = xr.DataArray(np.arange(ndvi.shape[0]) != t, dims="time")
        shown[NDVI] = cube[NDVI].where(keep)
        filled = (fuse_ridge(shown) if method == "ridge" else baseline(shown, method=method, lam=1.0))
        err = filled[NDVI_FUSED].values[t] - ndvi[t]
        ok = np.isfinite(err)
        sse, n = sse + float((err[ok] ** 2).sum()), n + int(ok.sum())
    return float(np.sqrt(sse / n))


@pytest.mark.realdata
@pytest.mark.parametrize("name", ["worldcereal_31UES", "worldcereal_31UES_monthly"])
def test_on_real_flemish_cropland_radar_is_used_only_where_it_earns_it(real_data, name):
    """Mixed cropland on S2 dates: S1 barely follows NDVI, ridge is not used. The same field
    on 30-day composites: long gaps, S1 helps, ridge is used. Leave-one-date-out (another
    protocol than the run's) confirms each choice against the baseline."""
    cube = _real(name)
    config = SelectionConfig(window=32, tile=8)
    scores, hidden = score_candidates(cube, ["linear", "whittaker", "ridge"], lam=1.0, config=config)
    choice = decide("auto", scores, config, hidden)
    lodo = {m: _lodo(cube, m) for m in ("linear", "ridge")}
    if lodo["ridge"] < 0.95 * lodo["linear"]:  # radar clearly helps on this cube
        assert choice.chosen == "ridge", choice.reason
    if lodo["ridge"] > lodo["linear"]:  # radar makes it worse: never used
        assert choice.chosen != "ridge", choice.reason
    assert {"ridge" if name.endswith("monthly") else "linear"} == {choice.chosen}


def test_a_period_without_s1_does_not_stop_ridge_and_gaps_left_open_are_not_eligible(cube):
    """S1 on its own dates leaves periods without radar: ridge bridges them in time. A method
    that leaves hidden values unfilled cannot be compared, so it is never chosen."""
    holed = cube.copy()
    for name in (VV, VH):
        values = cube[name].values.copy()
        values[7] = np.nan  # no acquisition in period 7
        holed[name] = (cube[name].dims, values, cube[name].attrs)
    filled = fuse_ridge(holed)
    assert filled[NDVI_FUSED].attrs["gapfill_method"] == "ridge"
    assert np.isfinite(filled[NDVI_FUSED].values).all()

    from fusecube.evaluate import selection

    real_fill = selection._fill

    def leaky(method, shown, **kw):
        out = real_fill(method, shown, **kw)
        return np.where(np.isfinite(shown[NDVI].values), out, np.nan) if method == "ridge" else out

    selection._fill = leaky
    try:
        scores, hidden = score_candidates(cube, ["linear", "whittaker", "ridge"], lam=1.0,
                                          config=FAST)
    finally:
        selection._fill = real_fill
    ridge = next(s for s in scores if s.method == "ridge")
    assert np.isnan(ridge.rmse) and "unfilled" in ridge.note
    assert decide("ridge", scores, FAST, hidden).chosen != "ridge"


# ----------------------------------------------------------------------------- short gaps
def test_gap_lengths_count_each_run_of_missing_dates():
    from fusecube.fusion.baselines import gap_lengths

    nan = np.nan
    series = np.array([[nan, 1, nan, nan, 2, nan, 3, nan],
                       [1, 2, 3, 4, 5, 6, 7, 8],
                       [nan] * 8])
    assert gap_lengths(series).tolist() == [[1, 0, 2, 2, 0, 1, 0, 1], [0] * 8, [8] * 8]


def test_whittaker_joins_short_gaps_linearly_and_smooths_long_ones():
    from fusecube.fusion.baselines import fill_array

    days = np.arange(12, dtype=float) * 10
    truth = np.sin(days / 40.0)[None]
    series = truth.copy()
    series[0, [3, 7, 8, 9]] = np.nan  # one single gap, one of three dates
    linear = fill_array(series, days, "linear")
    whittaker = fill_array(series, days, "whittaker", lam=1.0)
    blended = fill_array(series, days, "whittaker", lam=1.0, linear_below=1)
    assert blended[0, 3] == linear[0, 3] != whittaker[0, 3]
    np.testing.assert_array_equal(blended[0, 7:10], whittaker[0, 7:10])
    seen = ~np.isnan(series[0])  # observed values are kept (as float32)
    np.testing.assert_array_equal(blended[0, seen], series[0, seen].astype(np.float32))


def test_validation_picks_the_short_gap_rule_and_a_run_applies_it(cube):
    """The Whittaker score is the best of its ``linear_below`` variants on the same hidden
    values; the choice exposes it, and it is what the run's gap-fill config gets."""
    config = SelectionConfig(window=48, tile=8)
    scores, hidden = score_candidates(cube, ["linear", "whittaker"], lam=1.0, config=config)
    whittaker = next(s for s in scores if s.method == "whittaker")
    tried = whittaker.params["rmse_by_linear_below"]
    assert set(tried) == {"0", "1", "2", "3"}
    best = whittaker.params["linear_below"]
    assert whittaker.rmse == pytest.approx(tried[str(best)]) == pytest.approx(min(tried.values()))
    choice = decide("whittaker", scores, config, hidden)
    assert choice.chosen == "whittaker" and choice.linear_below == best

    from fusecube.runner.pipeline import gapfill_config

    run_config = RunConfig(source=CubeSource(path="x.zarr"), gapfill="whittaker",
                           gapfill_linear_below=best)
    assert gapfill_config(run_config).linear_below == best
