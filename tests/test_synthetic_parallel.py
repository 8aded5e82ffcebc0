"""Fast synthesis: block by block on threads, the same bytes for a seed whatever the blocks and threads.

The digests below were computed with the generator as it was before it was made parallel
(commit b66e708, single-threaded, one tile at a time); the faster code must reproduce them
bit for bit.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from fusecube.cube import read_cube
from fusecube.sources.synthetic.curves import _sig, paddy_calendar, paddy_curves
from fusecube.sources.synthetic.scene import MAX_SEASONS, SceneConfig
from fusecube.sources.synthetic.writer import synthesize

#: 300 x 270 x 20, seed 5: four generation tiles (two of them partial), paddy of both calendars.
PINNED = SceneConfig(width=300, height=270, seed=5, n_periods=20)
PINNED_CUBE = "a3e8541188619d503438b90f1635ea77f65b94067c3acdf682c5739633e98e1d"
PINNED_TRUTH = "bad3ab049ade8af51d41acf8024dc99c3a1ec157e9b3ba278a03fb3ff6bb1d80"


def _digest(path) -> str:
    ds = read_cube(path).load()
    h = hashlib.sha256()
    for name in sorted(ds.data_vars):
        h.update(name.encode())
        h.update(np.ascontiguousarray(ds[name].values).tobytes())
    return h.hexdigest()


@pytest.mark.parametrize(("block", "workers"), [(256, 2), (512, 1)])
def test_same_bytes_as_the_serial_generator(tmp_path, block, workers):
    """Two block sizes and thread counts, each equal to the pinned single-threaded output."""
    paths = synthesize(PINNED, tmp_path, workers=workers, block=block)
    assert _digest(paths["cube"]) == PINNED_CUBE
    assert _digest(paths["truth"]) == PINNED_TRUTH


def _reference_curves(p, days):
    """The plain formula (the generator's code before slabs and windows)."""
    t = days[None, :]
    flood = np.zeros((p.transplant.shape[0], days.size))
    crop = np.zeros_like(flood)
    for k in range(MAX_SEASONS):
        tp, hv = p.transplant[:, k : k + 1], p.harvest[:, k : k + 1]
        has = np.isfinite(tp)
        tp0, hv0 = np.where(has, tp, -1e6), np.where(has, hv, -1e6)
        flood += _sig((t - (tp0 - 18)) / 3.0) - _sig((t - (tp0 + 22)) / 4.0)
        crop += p.amplitude[:, k : k + 1] * (_sig((t - (tp0 + 38)) / 7.0) - _sig((t - (hv0 - 8)) / 4.0))
    flood = np.clip(flood, 0, 1)
    background = p.fallow[:, None] - (p.fallow - p.flooded)[:, None] * flood
    return background + crop, flood


@pytest.mark.parametrize("step", [2.0, 12.0])
def test_curve_slabs_and_windows_are_bit_exact(step):
    """Slabs of pixels and skipped far-off days give exactly the formula's bits."""
    rng = np.random.default_rng(7)
    n = 700  # several slabs, the last one partial
    params = paddy_calendar(rng.choice([2, 3], n), rng.uniform(0, 25, n), 19662.0, rng)
    days = np.arange(19662.0, 19662.0 + 745, step)
    ndvi, flood = paddy_curves(params, days)
    ref_ndvi, ref_flood = _reference_curves(params, days)
    assert np.array_equal(ndvi.view(np.uint64), ref_ndvi.view(np.uint64))
    assert np.array_equal(flood.view(np.uint64), ref_flood.view(np.uint64))


def test_block_must_be_whole_tiles(tmp_path):
    with pytest.raises(ValueError, match="multiple of the generation tile"):
        synthesize(SceneConfig(width=24, height=20, n_periods=10), tmp_path, block=100)
