"""3-D U-Net cube model vs the per-pixel fusion model vs Whittaker-only, on the same held-out data.

Protocol (one synthetic Demak-like scene, CPU):

1. Spatial split with fusion's ``SpatialSplit`` (square blocks, a buffer around validation
   blocks) and held-out dates drawn by fusion's ``choose_holdout_dates``. The held-out dates
   are removed from the input cube of every method (NaN everywhere).
2. The U-Net trains (``fusecube.ml.training``: Lightning, physics-style losses) on a copy of
   that cube in which the NDVI of validation blocks and their buffer is also removed, so it
   never sees a validation pixel's NDVI. The fusion model trains with the same split (its
   sampler never draws validation or buffer pixels). Train seconds are wall-clock.
3. Every method then gap-fills the input cube (validation pixels keep their other dates'
   observations, as in real use), and is scored on validation-block pixels only:
   ``heldout_dates_obs`` (clear observed NDVI on the held-out dates), ``heldout_dates_truth``
   and ``gaps_truth`` (the generator's true NDVI on held-out dates / at every gap).

Writes benchmarks/results/cube_model.json (``--quick``: cube_model_quick.json).

    python benchmarks/bench_cube_model.py            # 128 x 128 px, 62 periods
    python benchmarks/bench_cube_model.py --quick    # 64 x 64 px, 36 periods, few steps
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"


def _flat(a: np.ndarray) -> np.ndarray:
    """``(T, Y, X)`` → ``(Y*X, T)``."""
    return np.ascontiguousarray(a.reshape(a.shape[0], -1).T)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--periods", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None, help="U-Net optimiser steps")
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3, help="U-Net AdamW learning rate")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None, help="result file name (default cube_model.json)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    size = args.size or (64 if args.quick else 128)
    periods = args.periods or (36 if args.quick else 62)
    steps = args.steps or (60 if args.quick else 600)

    import lightning
    import torch

    from fusecube.cube import NDVI, NDVI_QUALITY, read_cube, write_cube
    from fusecube.fusion.baselines import fill_array
    from fusecube.fusion.neural.features import screen_zero_periods
    from fusecube.fusion.neural.model import NeuralFusion
    from fusecube.fusion.neural.train import TrainConfig, choose_holdout_dates
    from fusecube.fusion.neural.validation import score_groups, wet_season
    from fusecube.grid.periods import to_days
    from fusecube.ml.training.data import CubeFusionDataModule
    from fusecube.ml.training.task import CubeFusionTask
    from fusecube.ml.training.writer import FusedCubeWriter
    from fusecube.sources.synthetic.scene import SceneConfig
    from fusecube.sources.synthetic.writer import synthesize
    from fusecube.splits import SpatialSplit

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="bench-cube-model-"))
    paths = synthesize(SceneConfig(width=size, height=size, seed=args.seed, n_periods=periods), work / "scene")
    cube = read_cube(paths["cube"]).load()
    truth = read_cube(paths["truth"]).load()
    times = cube["time"].values
    n_t = times.size
    split = SpatialSplit(block=32, val_fraction=0.25, buffer=4, seed=args.seed)
    val = split.val_blocks((size, size))
    train_px = split.train_pixels((size, size))
    ndvi = cube[NDVI].values
    ndvi_flat = screen_zero_periods(_flat(ndvi))
    held = choose_holdout_dates(ndvi_flat[train_px.ravel()], times, 0.1,
                                np.random.default_rng([args.seed, 11]))
    print(f"scene {size}x{size}x{n_t}; val pixels {int(val.sum())}; held-out dates {held.tolist()}")

    cube_in = cube.copy(deep=True)
    cube_in[NDVI].values[held] = np.nan
    if NDVI_QUALITY in cube_in:
        cube_in[NDVI_QUALITY].values[held] = 0.0
    train_cube = cube_in.copy(deep=True)
    train_cube[NDVI].values[:, ~train_px] = np.nan  # no validation-block (or buffer) NDVI in training
    write_cube(train_cube, work / "train" / "s" / "cube.zarr")
    write_cube(cube_in, work / "input" / "s" / "cube.zarr")

    # -- U-Net
    lightning.seed_everything(args.seed, verbose=False)
    dm_options = dict(size=32, time_window=16, stride=16, time_stride=8, batch_size=4, block_size=32,
                      stats_cache=None, seed=args.seed)
    dm = CubeFusionDataModule(str(work / "train"), **dm_options)
    task = CubeFusionTask(depth=args.depth, width=args.width, lr=args.lr, seed=args.seed)
    trainer = lightning.Trainer(accelerator="cpu", max_steps=steps, logger=False, enable_checkpointing=False,
                                enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                                limit_val_batches=0)
    t0 = time.perf_counter()
    trainer.fit(task, dm)
    unet_train_s = time.perf_counter() - t0
    pred_dm = CubeFusionDataModule(str(work / "input"), **{**dm_options, "stride": None}, predict_overlap=8)
    pred_dm.load_state_dict(dm.state_dict())
    writer = FusedCubeWriter(str(work / "fused"))
    t0 = time.perf_counter()
    lightning.Trainer(accelerator="cpu", logger=False, callbacks=[writer], enable_progress_bar=False,
                      enable_model_summary=False).predict(task, pred_dm, return_predictions=False)
    unet_predict_s = time.perf_counter() - t0
    unet = read_cube(writer.written[0])["ndvi_fused"].values

    # -- per-pixel fusion model (issue 4), same split and input
    t0 = time.perf_counter()
    model = NeuralFusion(TrainConfig(split=split, seed=args.seed, threads=args.threads,
                                     device="cpu")).fit(cube_in)
    fusion_train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    fusion = model.predict(cube_in)["ndvi_fused"].values
    fusion_predict_s = time.perf_counter() - t0

    # -- baselines on the same input
    days = to_days(times)
    shown = screen_zero_periods(_flat(cube_in[NDVI].values))
    t0 = time.perf_counter()
    whittaker = fill_array(shown, days, "whittaker")
    whittaker_s = time.perf_counter() - t0
    linear = fill_array(shown, days, "linear")

    # -- scores on validation-block pixels
    sel = val.ravel()
    quality = _flat(cube[NDVI_QUALITY].values)[sel] if NDVI_QUALITY in cube else np.ones_like(ndvi_flat[sel])
    truth_flat = _flat(truth["ndvi_true"].values.astype(np.float32))[sel]
    is_held = np.isin(np.arange(n_t), held)[None]
    obs = ndvi_flat[sel]
    targets = {
        "heldout_dates_obs": np.where(is_held & np.isfinite(obs) & (quality >= 0.7), obs, np.nan),
        "heldout_dates_truth": np.where(is_held, truth_flat, np.nan),
        "gaps_truth": np.where(np.isnan(shown[sel]), truth_flat, np.nan),
    }
    preds = {"unet3d": _flat(unet)[sel], "fusion": _flat(fusion)[sel], "whittaker": whittaker[sel],
             "linear": linear[sel]}
    paddy = truth["paddy_mask"].values.ravel()[sel] > 0 if "paddy_mask" in truth else None
    wet = wet_season(times, shown)
    scores = {name: {m: {g: v for g, v in score_groups(p, target, wet=wet, paddy=paddy).items()
                         if g in ("all", "paddy", "wet")}
                     for m, p in preds.items()}
              for name, target in targets.items()}
    result = {
        "scene": {"size": size, "periods": n_t, "seed": args.seed},
        "protocol": {"split": {"block": split.block, "val_fraction": split.val_fraction, "buffer": split.buffer},
                     "val_pixels": int(val.sum()), "heldout_dates": held.tolist(),
                     "n_targets": {k: int(np.isfinite(v).sum()) for k, v in targets.items()}},
        "unet3d": {"depth": args.depth, "width": args.width, "steps": steps, "lr": args.lr, "window": [16, 32, 32],
                   "params": int(sum(p.numel() for p in task.net.parameters())),
                   "train_seconds": round(unet_train_s, 2), "predict_seconds": round(unet_predict_s, 2),
                   "loss_weights": task.weighting.weights()},
        "fusion": {"arch": model.arch_, "train_seconds": round(fusion_train_s, 2),
                   "predict_seconds": round(fusion_predict_s, 2)},
        "whittaker": {"fill_seconds": round(whittaker_s, 3)},
        "scores": scores,
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "torch_threads": args.threads, "device": "cpu", "torch": torch.__version__},
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / (args.out or ("cube_model_quick.json" if args.quick else "cube_model.json"))
    out.write_text(json.dumps(result, indent=1, default=float))
    print(f"{'target':<22}{'method':<11}{'RMSE':>8}{'R²':>8}{'RMSE paddy':>12}")
    for name, by_method in scores.items():
        for m, groups in by_method.items():
            p = groups.get("paddy", {})
            print(f"{name:<22}{m:<11}{groups['all']['rmse']:8.4f}{groups['all']['r2']:8.3f}"
                  f"{p.get('rmse', float('nan')):12.4f}")
    print(f"train seconds: unet3d {unet_train_s:.1f} ({steps} steps), fusion {fusion_train_s:.1f}; "
          f"written {out}")


if __name__ == "__main__":
    main()
