"""The fusecube side of the fusion peer comparison (benchmarks/peers/fusion_*.py).

Never needs the peer virtualenvs: only the export (hiding cases, synthetic crop) and scoring.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

PEERS = Path(__file__).resolve().parents[1] / "benchmarks" / "peers"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"fusion_peers_{name}", PEERS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


export = _load("fusion_export")
compare = _load("fusion_compare")


def test_hiding_cases_hide_only_interior_observations():
    ndvi = np.full(40, np.nan)
    observed = np.arange(0, 40, 3)  # 14 observations
    ndvi[observed] = np.linspace(0.2, 0.8, observed.size)
    labels, hidden, fold = export.hiding_cases(ndvi, block_sizes=(4,), loo_folds=3)
    loo = np.array(labels) == "leave-one-out"
    assert loo.sum() == observed.size - 2
    assert (hidden[loo].sum(axis=1) == 1).all()
    assert not hidden[:, observed[0]].any() and not hidden[:, observed[-1]].any()
    assert np.isfinite(ndvi[hidden.any(axis=0)]).all()  # only observed values are hidden
    blocks = hidden[~loo]
    assert blocks.shape[0] == (observed.size - 2) // 4
    assert (blocks.sum(axis=1) == 4).all() and blocks.sum(axis=0).max() == 1  # non-overlapping
    # consecutive observations: a block spans 4 neighbours in the observed order
    for row in blocks:
        positions = np.flatnonzero(np.isin(observed, np.flatnonzero(row)))
        assert np.array_equal(positions, np.arange(positions[0], positions[0] + 4))
    assert set(fold[loo]) == {0, 1, 2}
    assert len(set(fold[~loo])) == blocks.shape[0] and not set(fold[~loo]) & {0, 1, 2}


def test_errors_are_exact_on_scored_values_only():
    target = np.array([[0.5, 0.2, np.nan], [0.4, 0.6, 0.3]])
    scored = np.array([[True, False, True], [True, True, False]])
    pred = np.array([[0.6, 9.0, 0.0], [0.2, np.nan, 9.0]])
    out = compare.errors(pred, target, scored)
    # scored and finite target: (0,0) err +0.1, (1,0) err -0.2, (1,1) prediction missing
    assert out["n"] == 2
    assert out["rmse"] == pytest.approx(np.sqrt((0.01 + 0.04) / 2))
    assert out["mae"] == pytest.approx(0.15)
    assert out["bias"] == pytest.approx(-0.05)
    assert out["missing_share"] == pytest.approx(1 / 3)


def test_score_set_groups_real_cases():
    target = np.array([[np.nan, 0.5], [0.3, 0.4]])
    data = {"real__target": target, "real__scored": np.isfinite(target),
            "real__case": np.array(["leave-one-out", "block of 4"])}
    pred = np.array([[0.0, 0.5], [0.4, 0.4]])
    out = compare.score_set(pred, data, "real")
    assert out["leave-one-out"]["rmse"] == pytest.approx(0.0)
    assert out["block of 4"]["rmse"] == pytest.approx(np.sqrt(0.01 / 2))
    assert out["all"]["n"] == 3


@pytest.mark.slow
def test_synthetic_crop_is_held_out_paddy(tmp_path):
    from scipy import ndimage

    from fusecube.fusion.neural.train import TrainConfig
    from fusecube.fusion.neural.validation import trained_pixels
    from fusecube.sources.synthetic.scene import SceneConfig
    from fusecube.sources.synthetic.writer import synthesize

    synthesize(SceneConfig(width=128, height=128, seed=0), tmp_path / "scene")
    crop = export.synthetic_crop(tmp_path / "scene", pixels=50, seed=1)
    shape = tuple(crop["shape"])
    split = TrainConfig().split
    trained = trained_pixels(shape, crop["windows"].tolist(), split)
    # every crop pixel is farther than the split buffer from any training pixel
    near = ndimage.maximum_filter(trained, size=2 * split.buffer + 1).reshape(-1)
    assert crop["rows"].size == 50 and not near[crop["rows"]].any()
    from fusecube.cube import read_cube

    paddy = read_cube(tmp_path / "scene" / "truth.zarr")["paddy_mask"].values.reshape(-1) > 0
    assert paddy[crop["rows"]].all()
    # scored values are cloud gaps in the wet season, with the truth as target
    assert crop["scored"].any() and (crop["scored"] <= crop["gap"]).all()
    assert np.isfinite(crop["target"][crop["gap"]]).all()
    assert np.isnan(crop["ndvi"][crop["gap"]]).all()


@pytest.mark.realdata
def test_real_cases_from_the_field_series(real_data):
    path = real_data / export.FIELD_CSV
    series = export.read_field_series(path)
    assert series["days"].size == 145 and np.isfinite(series["ndvi"]).sum() == 33
    cases = export.real_cases(path)
    labels, counts = np.unique(cases["case"], return_counts=True)
    assert dict(zip(labels, counts, strict=True)) == {"leave-one-out": 31, "block of 4": 7,
                                                       "block of 8": 3}
    # the target is exactly the hidden observations, and they are gone from the input
    scored = cases["scored"]
    full = np.broadcast_to(series["ndvi"], scored.shape)
    assert np.array_equal(cases["target"][scored], full[scored])
    assert np.isnan(cases["ndvi"][scored]).all()
    assert np.array_equal(np.isfinite(cases["ndvi"]) | scored, np.isfinite(full))


def test_rmse_difference_interval_is_paired_and_signed():
    rng = np.random.default_rng(0)
    target = rng.uniform(0.2, 0.8, (40, 10))
    scored = rng.random((40, 10)) < 0.5
    good = target + rng.normal(0, 0.01, target.shape)
    bad = target + rng.normal(0, 0.1, target.shape)
    out = compare.rmse_difference_interval(good, bad, target, scored, draws=500)
    exact = (compare.errors(good, target, scored)["rmse"]
             - compare.errors(bad, target, scored)["rmse"])
    assert out["difference"] == pytest.approx(exact)
    assert out["low"] <= out["difference"] <= out["high"] < 0
    same = compare.rmse_difference_interval(good, good, target, scored, draws=100)
    assert same["low"] == same["high"] == same["difference"] == 0
