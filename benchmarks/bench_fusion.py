"""S1→NDVI fusion benchmark: train and predict seconds, accuracy under clouds vs the baselines.

Synthesises the Demak-like scene (timed separately, not counted), trains a fusion model on it
(bounded pixel sample, spatial-block split), gap-fills the whole scene block by block, and
scores every method on values hidden by clouds, against the truth, on pixels the model never
trained on (nor within the split buffer of one). Linear and Whittaker-only gap-fill are
measured in the same run on the same values. Writes benchmarks/results/fusion.json (or
fusion_quick.json) and prints a table.

    python benchmarks/bench_fusion.py            # Demak size, 671 x 893
    python benchmarks/bench_fusion.py --quick    # 128 x 128, about a minute
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
BLOCK = 256


def _grid(cube, method, model=None):
    """Gap-fill the cube block by block (like the runner); returns ``(T, Y, X)`` and seconds."""
    from fusecube.cube import NDVI_FUSED, X, Y
    from fusecube.fusion.baselines import gapfill
    from fusecube.quality.gates import apply_screen, screen_periods

    screen = screen_periods(cube)
    ny, nx = cube.sizes[Y], cube.sizes[X]
    out = np.empty((cube.sizes["time"], ny, nx), np.float32)
    seconds = 0.0
    for y0 in range(0, ny, BLOCK):
        for x0 in range(0, nx, BLOCK):
            sel = {Y: slice(y0, y0 + BLOCK), X: slice(x0, x0 + BLOCK)}
            block = apply_screen(cube.isel(sel).load(), screen)
            t0 = time.perf_counter()
            done = model.predict(block) if method == "fusion" else gapfill(block, method=method)
            seconds += time.perf_counter() - t0
            out[:, sel[Y], sel[X]] = done[NDVI_FUSED].values
    return out, seconds


def run(size: tuple[int, int], seed: int, workdir: Path, config, scene: Path | None = None) -> dict:
    """Synthesise (or reuse ``scene``), train, predict, score; returns the result record."""
    import torch

    from fusecube.cube import DIMS, NDVI, read_cube
    from fusecube.fusion.neural.model import NeuralFusion
    from fusecube.fusion.neural.validation import (
        holdout_pixels,
        score_groups,
        trained_pixels,
        wet_season,
    )
    from fusecube.sources.synthetic.scene import SceneConfig
    from fusecube.sources.synthetic.writer import synthesize
    from fusecube.splits import SpatialSplit

    torch.set_num_threads(config.threads)
    width, height = size
    t0 = time.perf_counter()
    if scene is None:
        paths = synthesize(SceneConfig(width=width, height=height, seed=seed), workdir / "scene")
    else:  # a scene written before by synthesize with the same size and seed
        paths = {"cube": scene / "cube.zarr", "truth": scene / "truth.zarr"}
    synth_s = time.perf_counter() - t0
    cube = read_cube(paths["cube"], chunks={})
    truth = read_cube(paths["truth"], chunks={})
    if (cube.sizes["x"], cube.sizes["y"]) != (width, height):
        raise SystemExit(f"--scene {scene} is {cube.sizes['x']}x{cube.sizes['y']}, not {width}x{height}")

    t0, c0 = time.perf_counter(), time.process_time()
    model = NeuralFusion(config).fit(cube)
    train_s, train_cpu = time.perf_counter() - t0, time.process_time() - c0
    c0 = time.process_time()
    fused, predict_s = _grid(cube, "fusion", model)
    predict_cpu = time.process_time() - c0  # includes reading the blocks
    filled = {"fusion": fused}
    seconds = {"fusion": {"train": round(train_s, 2), "predict": round(predict_s, 2),
                          "total": round(train_s + predict_s, 2),
                          "train_cpu": round(train_cpu, 2), "predict_cpu_with_reads": round(predict_cpu, 2)}}
    for method in ("whittaker", "linear"):
        filled[method], s = _grid(cube, method)
        seconds[method] = {"train": 0.0, "predict": round(s, 2), "total": round(s, 2)}

    shape = (cube.sizes["y"], cube.sizes["x"])
    split = SpatialSplit(**model.meta_["config"]["split"])
    trained = trained_pixels(shape, model.meta_["windows"], split)
    holdout = holdout_pixels(trained, split.buffer)
    land = truth["land_class"].values > 0
    paddy = truth["paddy_mask"].values > 0
    hidden = np.isnan(cube[NDVI].transpose(*DIMS).values)
    true = truth["ndvi_true"].transpose(*DIMS).values
    t = hidden.shape[0]
    keep = (holdout & land).reshape(-1)
    target = np.where(hidden, true, np.nan).reshape(t, -1).T[keep]
    wet = wet_season(cube["time"].values)
    accuracy = {name: score_groups(pred.reshape(t, -1).T[keep], target, wet=wet,
                                   paddy=paddy.reshape(-1)[keep])
                for name, pred in filled.items()}
    wet_gain = 1 - (accuracy["fusion"]["paddy_wet"]["rmse"]
                    / accuracy["whittaker"]["paddy_wet"]["rmse"])
    return {
        "size": f"{width}x{height}", "pixels": width * height, "seed": seed,
        "holdout_pixels": int(keep.sum()), "holdout_paddy_pixels": int((keep & paddy.reshape(-1)).sum()),
        "synth_seconds": round(synth_s, 2), "seconds": seconds,
        "accuracy_hidden_vs_truth_holdout": accuracy,
        "fusion_wet_paddy_rmse_gain_vs_whittaker": round(float(wet_gain), 4),
        "validation_metrics": model.metrics_, "training": model.meta_["trained_on"],
        "train_config": model.meta_["config"],
        "machine": {"cpus": os.cpu_count(), "torch_threads": config.threads,
                    "load_average_at_end": [round(v, 2) for v in os.getloadavg()],
                    "python": platform.python_version(), "torch": torch.__version__,
                    "device": model.meta_["device"]},
    }


def table(result: dict) -> str:
    """Plain-text summary."""
    acc = result["accuracy_hidden_vs_truth_holdout"]
    lines = [f"fusion benchmark, {result['size']} ({result['holdout_pixels']} held-out land pixels, "
             f"values hidden by clouds, vs truth)",
             f"{'method':<10} {'train s':>8} {'predict s':>9} {'RMSE paddy':>10} {'R² paddy':>8} "
             f"{'RMSE wet':>8} {'RMSE dry':>8} {'RMSE land':>9} {'R² land':>7}"]
    for name in ("fusion", "whittaker", "linear"):
        a, s = acc[name], result["seconds"][name]
        lines.append(f"{name:<10} {s['train']:>8.1f} {s['predict']:>9.1f} "
                     f"{a['paddy']['rmse']:>10.4f} {a['paddy']['r2']:>8.3f} "
                     f"{a['paddy_wet']['rmse']:>8.4f} {a['paddy_dry']['rmse']:>8.4f} "
                     f"{a['all']['rmse']:>9.4f} {a['all']['r2']:>7.3f}")
    lines.append(f"fusion wet-season paddy RMSE gain vs Whittaker-only: "
                 f"{100 * result['fusion_wet_paddy_rmse_gain_vs_whittaker']:.1f} %; "
                 f"train + predict {result['seconds']['fusion']['total']:.1f} s wall "
                 f"(CPU {result['seconds']['fusion']['train_cpu']:.1f} + "
                 f"{result['seconds']['fusion']['predict_cpu_with_reads']:.1f} s; "
                 f"load average {result['machine']['load_average_at_end'][0]})")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="128 x 128 scene (about a minute)")
    parser.add_argument("--size", default=None, help="WIDTHxHEIGHT (default 671x893)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--arch", default=None, help="mlp | conv | gru (default: TrainConfig)")
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="result JSON path")
    parser.add_argument("--scene", default=None,
                        help="folder of a scene already written by synthesize (same size/seed)")
    parser.add_argument("--min-steps", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--balance-dates", type=float, default=None)
    parser.add_argument("--holdout-dates", type=float, default=None)
    args = parser.parse_args()
    from fusecube.fusion.neural.train import TrainConfig

    size = args.size or ("128x128" if args.quick else "671x893")
    width, height = (int(v) for v in size.lower().split("x"))
    config = replace(TrainConfig(), threads=args.threads)
    if args.arch:
        config = replace(config, arch=args.arch)
    if args.width:
        config = replace(config, width=args.width)
    if args.min_steps:
        config = replace(config, min_steps=args.min_steps)
    if args.epochs:
        config = replace(config, epochs=args.epochs)
    if args.holdout_dates is not None:
        config = replace(config, holdout_dates=args.holdout_dates)
    if args.balance_dates is not None:
        config = replace(config, balance_dates=args.balance_dates)
    with tempfile.TemporaryDirectory(prefix="fusecube-bench-fusion-") as tmp:
        result = run((width, height), args.seed, Path(tmp), config,
                     Path(args.scene) if args.scene else None)
    result["quick"] = args.quick
    out = Path(args.out) if args.out else RESULTS / ("fusion_quick.json" if args.quick else "fusion.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=float))
    print(table(result))
    print(f"written: {out}")


if __name__ == "__main__":
    main()
