"""splits: blocks, the block draw, the buffer and date hold-outs shared by fusion, ml and paddy."""

from __future__ import annotations

import numpy as np
import pytest

from fusecube.errors import PatchError
from fusecube.splits import (
    SpatialSplit,
    block_ids,
    buffer_zone,
    draw_blocks,
    hold_out_dates,
    split_pixels,
)


def test_block_ids_are_row_major_with_partial_edge_blocks():
    np.testing.assert_array_equal(block_ids((5, 7), 3), [[0, 0, 0, 1, 1, 1, 2]] * 3 + [[3, 3, 3, 4, 4, 4, 5]] * 2)


def test_draw_takes_the_lowest_draws():
    # default_rng(0).permutation(6) = 3 2 5 4 0 1; default_rng(0).random(6) = .64 .27 .04 .02 .81 .91
    np.testing.assert_array_equal(draw_blocks(6, 0.5, np.random.default_rng(0)),
                                  [False, False, True, True, False, True])  # the first 3 of the permutation
    np.testing.assert_array_equal(draw_blocks(6, 0.5, np.random.default_rng(0), count="each"),
                                  [False, True, True, True, False, False])  # the draws < 0.5
    # at least one, at most n - 1, none of a single block
    assert draw_blocks(6, 0.0, np.random.default_rng(0)).tolist() == [False, False, False, True, False, False]
    assert draw_blocks(6, 1.0, np.random.default_rng(0), count="each").sum() == 5
    assert not draw_blocks(6, 1.0, np.random.default_rng(0), count="each")[5]  # the highest draw stays
    assert not draw_blocks(1, 0.9, np.random.default_rng(0)).any()


def test_buffer_zone_is_a_square():
    mask = np.zeros((7, 7), bool)
    mask[3, 3] = True
    expected = np.zeros((7, 7), bool)
    expected[1:6, 1:6] = True
    np.testing.assert_array_equal(buffer_zone(mask, 2), expected)
    np.testing.assert_array_equal(buffer_zone(mask, 0), mask)


def test_spatial_split_grid_with_buffer():
    split = SpatialSplit(block=4, val_fraction=0.3, buffer=1, seed=2)
    val = split.val_blocks((8, 12))
    expected = np.zeros((8, 12), bool)
    expected[:4, :4] = expected[4:, 4:8] = True  # blocks 0 and 4 of the 2 x 3 grid
    np.testing.assert_array_equal(val, expected)
    np.testing.assert_array_equal(split.train_pixels((8, 12)), ~buffer_zone(expected, 1))
    assert not SpatialSplit(block=16).val_blocks((10, 10)).any()  # one block: no validation


def test_split_pixels_stratified_keeps_to_eligible_pixels():
    eligible = np.ones((8, 8), bool)
    eligible[:, 7] = False
    paddy = np.zeros((8, 8), bool)
    paddy[:4, :4] = True
    train, validate = split_pixels(eligible, block=4, fraction=0.25, buffer=1,
                                   rng=np.random.default_rng(0), strata=paddy)
    # stratum {block 0} is a single block (none drawn); one of {1, 2, 3}: block 3
    expected = np.zeros((8, 8), bool)
    expected[4:, 4:7] = True
    np.testing.assert_array_equal(validate, expected)
    np.testing.assert_array_equal(train, eligible & ~buffer_zone(np.isin(block_ids((8, 8), 4), [3]), 1))


def test_hold_out_dates_spread_over_pools_each_keeping_one():
    pools = [np.array([0, 1, 2, 3]), np.array([5, 6, 7, 8, 9])]
    held = hold_out_dates(10, n=3, pools=pools, seed=1)
    assert held.sum() == 3
    assert held[pools[0]].sum() == 1 and held[pools[1]].sum() == 2  # later pools take the remainder
    held = hold_out_dates(10, n=8, pools=pools, seed=1)
    assert held[pools[0]].sum() == 3 and held[pools[1]].sum() == 4  # one date of each pool kept
    again = hold_out_dates(10, n=4, seed=np.random.default_rng(5))
    assert np.array_equal(hold_out_dates(10, n=4, seed=5), again)  # a seed or its generator
    with pytest.raises(PatchError, match="0 < n < 10"):
        hold_out_dates(10, n=10)
