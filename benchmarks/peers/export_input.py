"""Export the peer-comparison input: a crop of paddy pixels of the synthetic scene, with truth.

Runs in the main virtualenv. Writes ``<work>/input.npz`` that every peer runner reads with
numpy only:

- ``days`` (T,) float days since 1970-01-01, ``dates`` (T,) ``YYYY-MM-DD`` strings;
- ``cloudy`` (N, T): observed NDVI, NaN under clouds (and in the screened zero period),
  ``cloudy_weight`` (N, T): the observation quality (0 where missing);
- ``fused`` (N, T): the truth plus noise, gap-free (separates smoothing and phenology quality
  from gap-filling), ``fused_weight``: ones;
- ``true_sos``/``true_pos``/``true_eos`` (N, S) days, ``true_count`` (N, Y), ``years`` (Y,),
  ``start_month``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from fusecube.cube import read_cube
from fusecube.grid.periods import to_days
from fusecube.sources.synthetic.scene import SceneConfig
from fusecube.sources.synthetic.writer import synthesize
from fusecube.stages.phenology import PhenologyConfig

FUSED_NOISE = 0.02  # NDVI standard deviation of the gap-free input, like a clear observation


def _flat(values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    if np.issubdtype(values.dtype, np.datetime64):
        values = to_days(values)
    return values.reshape(values.shape[0], -1).T[rows].astype(np.float64)


def export(work: Path, *, size: int, pixels: int, seed: int) -> Path:
    """Synthesize (once) a ``size`` x ``size`` scene and export ``pixels`` paddy pixels."""
    work.mkdir(parents=True, exist_ok=True)
    (work / ".gitignore").write_text("*\n")  # benchmark scratch: never committed
    scene = work / f"scene-{size}-{seed}"
    if not (scene / "truth.zarr").exists():
        synthesize(SceneConfig(width=size, height=size, seed=seed), scene)
    cube = read_cube(scene / "cube.zarr").load()
    truth = read_cube(scene / "truth.zarr").load()
    paddy = np.flatnonzero(truth["paddy_mask"].values.reshape(-1) > 0)
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(paddy, size=min(pixels, paddy.size), replace=False))
    obs = _flat(cube["ndvi"].values, rows)
    quality = _flat(cube["ndvi_quality"].values, rows)
    # the scene has one period of bad zeros; fusecube's gates screen it, so every tool gets
    # it screened (NaN) rather than fed as a clear observation
    zero = int(truth.attrs.get("zero_period", -1))
    if zero >= 0:
        obs[:, zero] = np.nan
    quality = np.where(np.isfinite(obs), quality, 0.0)
    true_ndvi = _flat(truth["ndvi_true"].values, rows)
    fused = np.clip(true_ndvi + rng.normal(0, FUSED_NOISE, true_ndvi.shape), -1, 1)
    times = cube["time"].values
    out = work / "input.npz"
    np.savez_compressed(
        out, days=to_days(times), dates=np.datetime_as_string(times, unit="D"),
        cloudy=obs, cloudy_weight=quality, fused=fused, fused_weight=np.ones_like(fused),
        true_ndvi=true_ndvi,
        true_sos=_flat(truth["true_sos"].values, rows), true_pos=_flat(truth["true_pos"].values, rows),
        true_eos=_flat(truth["true_eos"].values, rows),
        true_count=_flat(truth["true_season_count"].values, rows),
        years=truth["year"].values, start_month=PhenologyConfig().year_start_month,
        scene=np.array(f"synthetic {size}x{size} seed {seed}"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--pixels", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    print(export(args.work, size=args.size, pixels=args.pixels, seed=args.seed))


if __name__ == "__main__":
    main()
