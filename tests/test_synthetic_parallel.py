"""Fast synthesis: block by block on threads, the same bytes for a seed whatever the blocks and threads.

The digests below pin the bytes of one scene. They were first computed with the generator as
it was before it was made parallel (commit b66e708, single-threaded, one tile at a time) and
re-pinned once, when the rice curves moved to a compiled kernel with a sigmoid saturated to
exactly 0 / 1 beyond +-20 (within 2.1e-9 of the smooth logistic; it lets each season skip the
days it cannot change) and libm's ``exp``, which can differ from numpy's vectorised one by an
ulp (the curves equal the formula to 1e-15, tested below); every block size and thread count
must reproduce them bit for bit.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from fusecube.cube import read_cube
from fusecube.sources.synthetic.curves import paddy_calendar, paddy_curves
from fusecube.sources.synthetic.scene import MAX_SEASONS, SceneConfig
from fusecube.sources.synthetic.writer import synthesize

#: 300 x 270 x 20, seed 5: four generation tiles (two of them partial), paddy of both calendars.
PINNED = SceneConfig(width=300, height=270, seed=5, n_periods=20)
PINNED_CUBE = "5b6d5782fd2a0cf27c7e57e45d866c9100d13174e28efb59192439bcb99c5e28"
PINNED_TRUTH = "dd120ad265e3f118bfcd7b6863a7276b52665a99734dc888033b12f5afae9542"


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


def _sig(x):
    """The curves' sigmoid: the logistic, exactly 0 / 1 beyond +-20."""
    with np.errstate(over="ignore"):
        return np.where(x <= -20, 0.0, np.where(x >= 20, 1.0, 1.0 / (1.0 + np.exp(-x))))


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


def test_saturated_sigmoid_is_within_float32_resolution_of_the_logistic():
    x = np.linspace(-60, 60, 200_001)
    assert np.max(np.abs(_sig(x) - 1.0 / (1.0 + np.exp(-x)))) < 2.1e-9


@pytest.mark.parametrize("step", [2.0, 12.0])
def test_compiled_curves_equal_the_formula(step):
    """Skipping each season's far-off days changes nothing: the curves equal the formula to an ulp."""
    rng = np.random.default_rng(7)
    n = 700  # several slabs, the last one partial
    params = paddy_calendar(rng.choice([2, 3], n), rng.uniform(0, 25, n), 19662.0, rng)
    days = np.arange(19662.0, 19662.0 + 745, step)
    ndvi, flood = paddy_curves(params, days)
    ref_ndvi, ref_flood = _reference_curves(params, days)
    np.testing.assert_allclose(ndvi, ref_ndvi, rtol=0, atol=1e-15)
    np.testing.assert_allclose(flood, ref_flood, rtol=0, atol=1e-15)
    shuffled = np.random.default_rng(1).permutation(days.size)  # any order of days
    again, _ = paddy_curves(params, days[shuffled])
    assert np.array_equal(again, ndvi[:, shuffled])


def test_block_must_be_whole_tiles(tmp_path):
    with pytest.raises(ValueError, match="multiple of the generation tile"):
        synthesize(SceneConfig(width=24, height=20, n_periods=10), tmp_path, block=100)
