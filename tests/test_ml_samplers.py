"""Window splits without leakage (fusecube.splits), held-out dates, cube windows, shuffling."""

from __future__ import annotations

import numpy as np
import pytest

from fusecube.errors import PatchError
from fusecube.ml.samplers import SeededShuffle, grid_windows
from fusecube.splits import hold_out_dates, spatial_block_split, with_held_out_dates


def _patch_grid(n_sources=2, height=160, width=192, size=16, stride=8, n_times=3):
    w = grid_windows([(n_times, height, width)] * n_sources, size=size, time_window=1,
                     stride=stride)
    return w.source, w.row, w.col, w.time


def _gap(split, source, row, col, size):
    """Smallest Chebyshev gap (px) between a training and a validation window (brute force)."""
    best = np.inf
    for s in np.unique(source):
        tr = split.train[source[split.train] == s]
        va = split.val[source[split.val] == s]
        if tr.size == 0 or va.size == 0:
            continue
        dr = np.abs(row[tr][:, None] - row[va][None, :]) - size
        dc = np.abs(col[tr][:, None] - col[va][None, :]) - size
        best = min(best, np.maximum(dr, dc).min())
    return best


@pytest.mark.parametrize("buffer", [0, 5, 16])
def test_no_train_window_within_buffer_of_val(buffer):
    source, row, col, _ = _patch_grid()
    split = spatial_block_split(source, row, col, 16, block_size=48, buffer=buffer, seed=3)
    assert split.train.size > 0 and split.val.size > 0 and split.dropped.size > 0
    assert _gap(split, source, row, col, 16) >= buffer
    everything = np.concatenate([split.train, split.val, split.dropped])
    assert np.array_equal(np.sort(everything), np.arange(source.size))  # a partition
    # dropped ones really were too close: the buffer is not wasteful
    keep_all = type(split)(np.union1d(split.train, split.dropped), split.val, split.dropped, {})
    assert _gap(keep_all, source, row, col, 16) < buffer


def test_split_is_reproducible_and_order_free():
    source, row, col, _ = _patch_grid()
    a = spatial_block_split(source, row, col, 16, seed=7, buffer=4)
    b = spatial_block_split(source, row, col, 16, seed=7, buffer=4)
    np.testing.assert_array_equal(a.train, b.train)
    np.testing.assert_array_equal(a.val, b.val)
    perm = np.random.default_rng(0).permutation(source.size)
    c = spatial_block_split(source[perm], row[perm], col[perm], 16, seed=7, buffer=4)
    np.testing.assert_array_equal(np.sort(perm[c.val]), a.val)
    d = spatial_block_split(source, row, col, 16, seed=8, buffer=4)
    assert not np.array_equal(a.val, d.val)


def test_all_dates_of_a_location_fall_on_one_side():
    source, row, col, _ = _patch_grid(n_times=4)
    split = spatial_block_split(source, row, col, 16, seed=1)
    loc = (source * 10_000 + row) * 10_000 + col
    assert not np.intersect1d(loc[split.train], loc[split.val]).size


def test_split_by_source_keeps_scenes_whole():
    source, row, col, _ = _patch_grid(n_sources=5)
    split = spatial_block_split(source, row, col, 16, by="source", val_fraction=0.4, seed=2)
    val_sources = np.unique(source[split.val])
    assert val_sources.size == 2
    assert not np.isin(source[split.train], val_sources).any() and split.dropped.size == 0


def test_split_errors():
    with pytest.raises(PatchError, match="at least two"):
        spatial_block_split([0, 0], [0, 16], [0, 0], 16, block_size=1024)
    with pytest.raises(PatchError, match="val_fraction"):
        spatial_block_split([0, 0], [0, 64], [0, 0], 16, val_fraction=1.0)


def test_held_out_dates_leave_training():
    source, row, col, time = _patch_grid(n_times=6)
    held = hold_out_dates(6, n=2, seed=4)
    assert held.sum() == 2 and np.array_equal(held, hold_out_dates(6, n=2, seed=4))
    split = with_held_out_dates(spatial_block_split(source, row, col, 16), time, held)
    assert not held[time[split.train]].any()
    assert held[time[split.val]].any()
    assert np.array_equal(hold_out_dates(6, indices=[1, 5]), np.isin(np.arange(6), [1, 5]))
    with pytest.raises(PatchError):
        hold_out_dates(6, indices=[6])


def test_grid_windows_fit_inside():
    w = grid_windows([(10, 40, 48), (5, 16, 16)], size=16, time_window=4, stride=12,
                     time_stride=3)
    assert len(w) == 3 * 3 * 3 + 1 * 1 * 1  # t: 0,3,6 | rows: 0,12,24 | cols: 0,12,24
    assert (w.row + 16 <= np.where(w.source == 0, 40, 16)).all()
    assert (w.time + 4 <= np.where(w.source == 0, 10, 5)).all()
    with pytest.raises(PatchError, match="smaller size"):
        grid_windows([(3, 8, 8)], size=16, time_window=1)


def test_seeded_shuffle():
    s = SeededShuffle(50, seed=1)
    first = list(s)
    assert sorted(first) == list(range(50)) and first != list(range(50))
    assert list(SeededShuffle(50, seed=1)) == first
    s.set_epoch(1)
    second = list(s)
    assert second != first and sorted(second) == list(range(50))
    s.set_epoch(0)
    assert list(s) == first
