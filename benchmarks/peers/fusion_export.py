"""Export the fusion-comparison input (main virtualenv): real field series and a synthetic crop.

Writes ``<work>/fusion_input.npz``, read with numpy only by every fusion runner. Keys are
prefixed ``real__`` or ``synth__``; every data set holds

- ``days`` (T,) float days since 1970-01-01;
- ``ndvi`` (C, T): the NDVI each method sees (NaN = missing or hidden);
- ``rvi`` (C, T): the radar vegetation index given to MOGPR (and, on the real series, to
  fusecube's model);
- ``target`` (C, T): the value to reconstruct where ``scored`` is True, NaN elsewhere;
- ``scored`` (C, T) bool, ``case`` (C,) a label per series.

**Real** (``mogpr_input.csv``, one field, 145 dates of 2019): every series is the field's one
series with some NDVI observations hidden. Cases: leave-one-out (each interior observation
alone) and blocks of consecutive observations (4 ≈ 1.5 months and 8 ≈ 3 months, like a cloudy
season), never the first or last observation (no method may extrapolate). ``real__fold``
(C,) groups cases whose hidden dates a fusecube model may not see: one model per fold.

**Synthetic** (the Demak-like scene): paddy pixels the fusion model never trains on (outside
its training windows and the split buffer, as fusecube's own validation does); the target is
the true NDVI under the clouds. ``synth__scored`` marks wet-season (Nov-Mar) cloud gaps,
``synth__gap`` every cloud gap.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

FIELD_CSV = Path("fusets_bids") / "mogpr_input.csv"
DEFAULT_REAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "real"
BLOCK_SIZES = (4, 8)
LOO_FOLDS = 8


def read_field_series(path: Path, *, orbit: str = "RVI_DESC") -> dict[str, np.ndarray]:
    """The field-mean series of ``mogpr_input.csv``: dates, NDVI and one orbit's RVI.

    Args:
        path: The CSV (columns ``date,NDVI,RVI_DESC,RVI_ASC``).
        orbit: RVI column to use (descending has 119 dates, ascending 60).

    Returns:
        ``days`` (T,), ``ndvi`` (T,), ``rvi`` (T,), NaN where a signal has no value.
    """
    import pandas as pd

    frame = pd.read_csv(path)
    times = pd.to_datetime(frame["date"], utc=True).dt.tz_localize(None).to_numpy("datetime64[ns]")
    days = (times - np.datetime64("1970-01-01", "ns")) / np.timedelta64(1, "D")
    return {"days": days.astype(np.float64), "ndvi": frame["NDVI"].to_numpy(np.float64),
            "rvi": frame[orbit].to_numpy(np.float64)}


def hiding_cases(ndvi: np.ndarray, *, block_sizes=BLOCK_SIZES,
                 loo_folds: int = LOO_FOLDS) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Which observations of one series each case hides.

    Args:
        ndvi: ``(T,)`` the full series (NaN = not observed).
        block_sizes: Lengths (in observations) of the consecutive blocks hidden.
        loo_folds: Leave-one-out cases are grouped into this many training folds
            (observations ``i``, ``i + loo_folds``, ... share a fold).

    Returns:
        ``(labels, hidden, fold)``: a label per case, ``(C, T)`` bool hidden masks (only
        observed values, never the first or last observation), ``(C,)`` training fold.
    """
    observed = np.flatnonzero(np.isfinite(ndvi))
    interior = observed[1:-1]
    labels, masks, folds = [], [], []
    for k, index in enumerate(interior):
        mask = np.zeros(ndvi.size, bool)
        mask[index] = True
        labels.append("leave-one-out")
        masks.append(mask)
        folds.append(k % loo_folds)
    fold = loo_folds
    for size in block_sizes:
        for start in range(0, interior.size - size + 1, size):  # non-overlapping blocks
            mask = np.zeros(ndvi.size, bool)
            mask[interior[start : start + size]] = True
            labels.append(f"block of {size}")
            masks.append(mask)
            folds.append(fold)
            fold += 1
    return labels, np.array(masks), np.array(folds)


def real_cases(path: Path, **kwargs) -> dict[str, np.ndarray]:
    """The real data set: one row per hiding case (see :func:`hiding_cases`)."""
    series = read_field_series(path)
    labels, hidden, fold = hiding_cases(series["ndvi"], **kwargs)
    n = len(labels)
    full = np.broadcast_to(series["ndvi"], (n, series["ndvi"].size))
    return {"days": series["days"], "ndvi": np.where(hidden, np.nan, full),
            "rvi": np.broadcast_to(series["rvi"], full.shape).copy(),
            "target": np.where(hidden, full, np.nan), "scored": hidden,
            "case": np.array(labels), "fold": fold}


def synthetic_crop(scene: Path, *, pixels: int, seed: int) -> dict[str, np.ndarray]:
    """Paddy pixels of a synthetic scene that a default fusion training never sees.

    The training windows and spatial split are the ones
    :meth:`~fusecube.fusion.neural.model.NeuralFusion.fit` uses with the default
    :class:`~fusecube.fusion.neural.train.TrainConfig`; the runner checks that the fitted model
    used the same windows.
    """
    from fusecube.cube import DIMS, NDVI, VH, VV, read_cube
    from fusecube.fusion.neural.features import radar_features, screen_zero_periods
    from fusecube.fusion.neural.train import TrainConfig, sample_windows
    from fusecube.fusion.neural.validation import holdout_pixels, trained_pixels, wet_season
    from fusecube.grid.periods import to_days

    cube = read_cube(scene / "cube.zarr").load()
    truth = read_cube(scene / "truth.zarr").load()
    shape = (cube.sizes["y"], cube.sizes["x"])
    config = TrainConfig()
    windows = [[w[0].start, w[0].stop, w[1].start, w[1].stop] for w in sample_windows(shape, config)]
    holdout = holdout_pixels(trained_pixels(shape, windows, config.split), config.split.buffer)
    paddy = truth["paddy_mask"].values > 0
    candidates = np.flatnonzero((holdout & paddy).reshape(-1))
    if candidates.size == 0:
        raise SystemExit(f"no held-out paddy pixel in {scene}; use a larger --size")
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(candidates, size=min(pixels, candidates.size), replace=False))
    series = {n: cube[n].transpose(*DIMS).values.astype(np.float32) for n in (VV, VH, NDVI)}
    t = series[NDVI].shape[0]
    raw = series[NDVI].reshape(t, -1).T[rows]
    ndvi = screen_zero_periods(series[NDVI].reshape(t, -1).T)[rows]  # every method gets it screened
    rvi = radar_features(series, ("rvi_local",), window=config.window)[rows, 0]
    true = truth["ndvi_true"].transpose(*DIMS).values.reshape(t, -1).T[rows]
    gap = np.isnan(raw)  # under clouds (the screened zero period is not a cloud)
    wet = wet_season(cube["time"].values, raw)[None, :]
    scored = gap & wet
    return {"days": to_days(cube["time"].values), "ndvi": ndvi.astype(np.float64),
            "rvi": rvi.astype(np.float64), "target": np.where(gap, true, np.nan),
            "scored": scored, "gap": gap, "case": np.array(["paddy pixel"] * rows.size),
            "rows": rows, "windows": np.array(windows), "shape": np.array(shape),
            "held_out_paddy": np.array(candidates.size)}


def export(work: Path, *, real: Path | None, size: int, seed: int, pixels: int) -> Path:
    """Write ``fusion_input.npz`` (and the synthetic scene, once) under ``work``."""
    from fusecube.sources.synthetic.scene import SceneConfig
    from fusecube.sources.synthetic.writer import synthesize

    work.mkdir(parents=True, exist_ok=True)
    (work / ".gitignore").write_text("*\n")  # benchmark scratch: never committed
    out: dict[str, np.ndarray] = {}
    if real is not None and (real / FIELD_CSV).exists():
        out.update({f"real__{k}": v for k, v in real_cases(real / FIELD_CSV).items()})
    scene = work / f"scene-{size}-{seed}"
    if not (scene / "truth.zarr").exists():
        synthesize(SceneConfig(width=size, height=size, seed=seed), scene)
    out.update({f"synth__{k}": v for k, v in synthetic_crop(scene, pixels=pixels, seed=seed).items()})
    out["synth__scene"] = np.array(str(scene))
    out["synth__label"] = np.array(f"synthetic Demak-like {size}x{size}, seed {seed}")
    path = work / "fusion_input.npz"
    np.savez_compressed(path, **out)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--real", type=Path, default=DEFAULT_REAL, help="../shared/data/real")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pixels", type=int, default=300)
    args = parser.parse_args()
    print(export(args.work, real=args.real.resolve(), size=args.size, seed=args.seed,
                 pixels=args.pixels))


if __name__ == "__main__":
    main()
