"""SAR preprocessing: invalid values, dB, clip bounds (exact and streaming), normalisation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fusecube.errors import PatchError
from fusecube.ml.sar import (
    PERCENTILE_BINS,
    SARPreprocessing,
    compute_clip_bounds,
    fit_preprocessing,
    handle_invalid_values,
)
from fusecube.units import to_db


def _speckle(seed: int, shape=(12, 2, 16, 16)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.array([0.08, 0.02], np.float32)[None, :, None, None]
    return (base * rng.gamma(4.5, 1 / 4.5, size=shape)).astype(np.float32)


def test_handle_invalid_counts_each_kind_and_fills():
    x = np.full((2, 3, 4), 0.5, np.float32)
    x[0, 0, 0] = np.nan
    x[0, 0, 1] = np.inf
    x[0, 0, 2] = -np.inf
    x[0, 1, 0] = 0.0
    x[0, 1, 1] = -0.2
    x[1, 2, 3] = -9999.0  # negative: counted as non-positive first, not nodata
    x[1, 0, 0] = 7.0
    src = x.copy()
    out, counts = handle_invalid_values(x, strategy="constant", fill_value=1.5, nodata=7.0)
    assert np.array_equal(x, src, equal_nan=True)  # input untouched
    assert (counts.nan, counts.posinf, counts.neginf, counts.nonpositive, counts.nodata) == (
        1, 1, 1, 3, 1)
    assert counts.invalid == 7 and counts.filled == 7 and counts.unfillable == 0
    assert out.dtype == np.float32
    assert np.count_nonzero(out == 1.5) == 7 and np.all(np.isfinite(out))


def test_handle_invalid_median_per_image_and_unfillable():
    x = np.stack([np.arange(1, 13, dtype=np.float32).reshape(3, 4),
                  np.full((3, 4), np.nan, np.float32)])
    x[0, 0, 0] = np.nan
    out, counts = handle_invalid_values(x, strategy="median")
    assert out[0, 0, 0] == np.median(np.arange(2, 13))  # median of that image's valid values
    assert np.isnan(out[1]).all()
    assert counts.filled == 1 and counts.unfillable == 12 and counts.nan == 13


def test_handle_invalid_nan_strategy_and_db_units():
    x = np.array([[[-3.0, 0.0, np.inf]]], np.float32)
    out, counts = handle_invalid_values(x, strategy="nan", linear=False)
    assert counts.nonpositive == 0 and counts.posinf == 1
    assert out[0, 0, 0] == -3.0 and out[0, 0, 1] == 0.0 and np.isnan(out[0, 0, 2])
    with pytest.raises(PatchError, match="fill strategy"):
        handle_invalid_values(x, strategy="mean")


def test_percentile_in_memory_is_exact():
    x = _speckle(0)
    bounds = compute_clip_bounds(x, "percentile", low_pct=2, high_pct=98, transform=to_db)
    db = to_db(x)
    for c in range(2):
        lo, hi = np.percentile(db[:, c], [2, 98])
        assert bounds.low[c] == pytest.approx(lo, abs=1e-5)
        assert bounds.high[c] == pytest.approx(hi, abs=1e-5)
    assert bounds.params["exact"] is True


def test_percentile_streaming_over_shards_within_histogram_resolution():
    shards = [_speckle(s) for s in range(4)]
    shards[1][0, 0, 0, 0] = np.nan  # ignored, like any non-finite value
    bounds = compute_clip_bounds(shards, "percentile", low_pct=1, high_pct=99, transform=to_db)
    assert bounds.params["exact"] is False
    allv = to_db(np.concatenate(shards))
    for c in range(2):
        vals = np.sort(allv[:, c][np.isfinite(allv[:, c])])
        width = (vals[-1] - vals[0]) / PERCENTILE_BINS
        for q, got in ((1, bounds.low[c]), (99, bounds.high[c])):
            k = int(np.floor((vals.size - 1) * q / 100))
            # between the neighbouring order statistics, give or take two histogram bins
            assert vals[k - 1] - 2 * width <= got <= vals[k + 1] + 2 * width


def test_sigma_streaming_equals_numpy():
    shards = [_speckle(s) for s in range(3)]
    bounds = compute_clip_bounds(shards, "sigma", k=2.5)
    allv = np.concatenate(shards).astype(np.float64)
    for c in range(2):
        m, s = allv[:, c].mean(), allv[:, c].std()
        assert bounds.low[c] == pytest.approx(m - 2.5 * s, rel=1e-6)
        assert bounds.high[c] == pytest.approx(m + 2.5 * s, rel=1e-6)


def test_fixed_bounds_and_errors():
    b = compute_clip_bounds(np.zeros((1, 1, 2, 2)), "fixed", low=-25, high=0)
    assert (b.low, b.high) == ((-25.0,), (0.0,))
    with pytest.raises(PatchError, match="low < high"):
        compute_clip_bounds(np.zeros((1, 1, 2, 2)), "fixed", low=1, high=0)
    with pytest.raises(PatchError, match="needs both"):
        compute_clip_bounds(np.zeros((1, 1, 2, 2)), "fixed", low=1)
    with pytest.raises(PatchError, match="re-iterable"):
        compute_clip_bounds(iter([_speckle(0)]), "sigma")


def test_minmax_and_zscore_use_training_statistics_only():
    train, other = _speckle(1), _speckle(2) * 10  # a brighter, unseen set
    p = fit_preprocessing([train[:6], train[6:]], db=True, clip_method="percentile", norm="minmax")
    y = p.apply(train)
    assert y.dtype == np.float32 and y.min() >= 0.0 and y.max() <= 1.0
    # 1 % of the training values sit at each end after clipping
    assert 0.005 < np.mean(y[:, 0] == 0.0) < 0.02
    assert np.mean(p.apply(other)[:, 0] == 1.0) > 0.5  # clipped at the *training* high bound

    z = fit_preprocessing([train], db=True, clip_method="sigma", norm="zscore", k=3)
    zt = z.apply(train)
    for c in range(2):
        assert zt[:, c].mean() == pytest.approx(0.0, abs=1e-4)
        assert zt[:, c].std() == pytest.approx(1.0, abs=1e-4)
    again = SARPreprocessing.from_dict(json.loads(json.dumps(z.to_dict())))
    assert again == z
    np.testing.assert_array_equal(again.apply(other), z.apply(other))


def test_apply_on_4d_cube_samples_uses_band_axis():
    x = _speckle(3, shape=(5, 2, 8, 8)).transpose(1, 0, 2, 3)  # (band, time, y, x)
    p = fit_preprocessing(x[None], db=True, clip_method="percentile", norm="minmax")
    y = p.apply(x, channel_axis=-4)
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
