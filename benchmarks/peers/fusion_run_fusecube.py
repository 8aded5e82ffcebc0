"""Runner: fusecube's fusion and the two baselines on the fusion-comparison input (main venv).

Reads ``<work>/fusion_input.npz``; writes ``<work>/fusecube_fusion.npz`` (``<method>__<set>``
reconstructed NDVI) and ``<work>/fusecube_fusion.json`` (seconds).

- **Synthetic**: the fusion model is trained the way the pipeline trains it, once per scene
  (default :class:`~fusecube.fusion.neural.train.TrainConfig`, VV/VH features, spatial split), then
  the whole scene is gap-filled with :meth:`~fusecube.fusion.neural.model.NeuralFusion.predict`;
  the crop's pixels are in the validation blocks, never trained on. Cost per pixel = (train + predict) / scene
  pixels, and predict alone.
- **Real** (one field-mean series, RVI only): there is no scene to train on, so a model is
  trained on the field's own series, self-supervised as fusecube always trains (observations
  hidden at random, predicted from RVI and the rest), with RVI given as the only radar
  channel. The values a case hides are never shown to the model that predicts them: one model
  per fold of cases (``real__fold``), trained with every hidden value of its fold removed.
  Cost per series = one training + one prediction.
- **Guided Whittaker** (both sets): :func:`~fusecube.fusion.guided.model.guided_whittaker` per
  series with the RVI as guide (real: the field's RVI; synthetic: the pixel's box-filtered
  RVI, the series MOGPR gets), λ and λ_g chosen per series by exact leave-one-out CV on its
  own observations. Cost per series = the whole call (guide smoothing, every candidate, the
  choice) / series.
- **Ridge fusion** (synthetic only: it learns across the pixels of a scene, and the real field
  is one series): :class:`~fusecube.fusion.ridge.model.RidgeFusion` fitted on the scene's own
  observations and gap-filling the whole scene; cost per pixel = (fit + predict, zero-period
  screening included) / scene pixels.
- **Baselines** (both sets): linear interpolation and Whittaker-only (``fill_array``).

``--methods`` runs a subset and merges it into the outputs of an earlier run (for work on one
method; a published table comes from a full run).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

REPEAT = int(os.environ.get("PEERS_REPEAT", "3"))
REAL_TRAIN = {"batch_size": 32, "min_steps": 150}  # a single series: small batches suffice


def baselines(ndvi: np.ndarray, days: np.ndarray) -> tuple[dict, dict]:
    """Linear and Whittaker-only gap-fill of ``(N, T)``, with the best-of-REPEAT seconds."""
    from fusecube.fusion.baselines import fill_array

    out, seconds = {}, {}
    for method in ("linear", "whittaker"):
        best = np.inf
        for _ in range(REPEAT):  # best of REPEAT: the machine is shared
            start = time.perf_counter()
            out[method] = fill_array(ndvi, days, method)
            best = min(best, time.perf_counter() - start)
        seconds[method] = best
    return out, seconds


def fusion_real(data, threads: int = 1) -> tuple[np.ndarray, dict]:
    """Self-supervised fusion per fold of the field's hiding cases (see module docstring)."""
    from fusecube.fusion.neural.model import NeuralFusion
    from fusecube.fusion.neural.train import PixelSample, TrainConfig

    days, ndvi, rvi = data["real__days"], data["real__ndvi"], data["real__rvi"]
    fold, scored = data["real__fold"], data["real__scored"]
    times = (np.datetime64("1970-01-01", "ns")
             + np.round(days * 86400e9).astype("int64").astype("timedelta64[ns]"))
    config = replace(TrainConfig(), radar_features=("rvi",), window=1, holdout_dates=0.0,
                     threads=threads, **REAL_TRAIN)
    full = np.where(scored, data["real__target"], ndvi)[0]  # the field's complete series
    pred = np.full(ndvi.shape, np.nan, np.float32)
    train_s = predict_s = 0.0
    for f in np.unique(fold):
        cases = fold == f
        train_ndvi = np.where(scored[cases].any(axis=0), np.nan, full)[None].astype(np.float32)
        radar = rvi[:1, None, :].astype(np.float32)
        sample = PixelSample(radar=radar, ndvi=train_ndvi, quality=np.ones_like(train_ndvi),
                             role=np.zeros(1, np.int8), paddy=None, times=times)
        start = time.perf_counter()
        model = NeuralFusion(replace(config, seed=int(f))).fit_sample(sample)
        train_s += time.perf_counter() - start
        start = time.perf_counter()
        pred[cases] = model.predict_series(rvi[cases, None, :].astype(np.float32),
                                           ndvi[cases].astype(np.float32), None, days)
        predict_s += time.perf_counter() - start
    models = int(np.unique(fold).size)
    return pred, {"models": models, "train_s": train_s, "predict_s": predict_s,
                  "series": int(ndvi.shape[0]), "train_config": REAL_TRAIN}


def fusion_synthetic(data, threads: int = 1) -> tuple[np.ndarray, dict]:
    """Train once on the scene, gap-fill the whole scene, return the crop's rows."""
    from fusecube.cube import DIMS, NDVI_FUSED, read_cube
    from fusecube.fusion.neural.model import NeuralFusion
    from fusecube.fusion.neural.train import TrainConfig

    cube = read_cube(Path(str(data["synth__scene"])) / "cube.zarr").load()
    start = time.perf_counter()
    model = NeuralFusion(replace(TrainConfig(), threads=threads)).fit(cube)
    train_s = time.perf_counter() - start
    if model.meta_["windows"] != data["synth__windows"].tolist():
        raise SystemExit("the model trained on other windows than the export assumed: the crop "
                         "may hold training pixels; fix fusion_export.synthetic_crop")
    predict_s = np.inf
    for _ in range(REPEAT):
        start = time.perf_counter()
        fused = model.predict(cube)[NDVI_FUSED].transpose(*DIMS).values
        predict_s = min(predict_s, time.perf_counter() - start)
    t = fused.shape[0]
    crop = fused.reshape(t, -1).T[data["synth__rows"]]
    return crop, {"scene_pixels": int(fused[0].size), "train_s": train_s, "predict_s": predict_s,
                  "validation": model.metrics_, "trained_on": model.meta_["trained_on"]}


def guided(ndvi: np.ndarray, rvi: np.ndarray, days: np.ndarray) -> tuple[np.ndarray, dict]:
    """Radar-guided Whittaker of every series (LOO-chosen λ, λ_g), best-of-REPEAT seconds."""
    from fusecube.fusion.guided.model import guided_whittaker

    guided_whittaker(ndvi[:2], rvi[:2], days)  # compile the kernel outside the timing
    best = np.inf
    for _ in range(REPEAT):
        start = time.perf_counter()
        result = guided_whittaker(ndvi, rvi, days)
        best = min(best, time.perf_counter() - start)
    chosen = {"lam": np.unique(result.lam[np.isfinite(result.lam)], return_counts=True),
              "guide_lam": np.unique(result.guide_lam[np.isfinite(result.guide_lam)],
                                     return_counts=True)}
    return result.filled, {"seconds": best, "coef_median": float(np.nanmedian(result.coef)),
                           "chosen": {k: dict(zip(v[0].tolist(), v[1].tolist(), strict=True))
                                      for k, v in chosen.items()}}


def ridge_synthetic(data) -> tuple[np.ndarray, dict]:
    """Ridge fusion fitted on the whole scene and gap-filling it; the crop's rows."""
    from fusecube.cube import DIMS, NDVI, VH, VV, read_cube
    from fusecube.fusion.neural.features import screen_zero_periods
    from fusecube.fusion.ridge.model import RidgeFusion
    from fusecube.grid.periods import to_days

    cube = read_cube(Path(str(data["synth__scene"])) / "cube.zarr").load()
    vv, vh, ndvi = (cube[n].transpose(*DIMS).values for n in (VV, VH, NDVI))
    days = to_days(cube["time"].values)
    t = ndvi.shape[0]
    best = np.inf
    for _ in range(REPEAT):
        start = time.perf_counter()
        screened = screen_zero_periods(ndvi.reshape(t, -1).T).T.reshape(ndvi.shape)
        filled = RidgeFusion().fit_predict(vv, vh, screened, days)
        best = min(best, time.perf_counter() - start)
    return filled[data["synth__rows"]], {"scene_pixels": int(filled.shape[0]), "seconds": best}


def main(work: Path, methods: set[str]) -> None:
    data = np.load(work / "fusion_input.npz")
    out, report = {}, {"tool": "fusecube", "threads": 1}
    if methods != set(METHODS):  # a partial run updates the last full one
        out = dict(np.load(work / "fusecube_fusion.npz"))
        report = json.loads((work / "fusecube_fusion.json").read_text())
    if "fusion" in methods:
        import torch

        torch.set_num_threads(1)
    for name in ("real", "synth"):
        if f"{name}__ndvi" not in data:
            continue
        entry = report.setdefault(name, {"series": int(data[f"{name}__ndvi"].shape[0])})
        ndvi, days = data[f"{name}__ndvi"], data[f"{name}__days"]
        if "baselines" in methods:
            fills, entry["baseline_s"] = baselines(ndvi, days)
            for method, values in fills.items():
                out[f"{method}__{name}"] = values
        if "fusion" in methods:
            pred, entry["fusion"] = fusion_real(data) if name == "real" else fusion_synthetic(data)
            out[f"fusion__{name}"] = pred
        if "guided" in methods:
            out[f"guided__{name}"], entry["guided"] = guided(ndvi, data[f"{name}__rvi"], days)
        if "ridge" in methods and name == "synth":
            out["ridge__synth"], entry["ridge"] = ridge_synthetic(data)
    np.savez_compressed(work / "fusecube_fusion.npz", **out)
    (work / "fusecube_fusion.json").write_text(json.dumps(report, indent=2, default=float))


METHODS = ("baselines", "fusion", "guided", "ridge")

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("work", type=Path)
    parser.add_argument("--methods", default=",".join(METHODS),
                        help=f"comma-separated subset of {METHODS}")
    args = parser.parse_args()
    chosen = set(args.methods.split(","))
    if not chosen <= set(METHODS):
        raise SystemExit(f"unknown methods {sorted(chosen - set(METHODS))}; use {METHODS}")
    main(args.work, chosen)
