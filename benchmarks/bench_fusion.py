"""S1→NDVI fusion benchmark at several radar skills: every method, and what ``gapfill: auto`` picks.

For each radar skill (:attr:`~fusecube.sources.synthetic.scene.SceneConfig.radar_skill`: how
much of the radar follows its own pixel: level and vegetation) the Demak-like scene is
synthesised (timed separately, not counted), then every method gap-fills it block by block:
linear and Whittaker (optical baselines), ridge (closed-form S1 fusion fitted on each block) and
the neural fusion (trained on the scene: bounded pixel sample, spatial-block split). Each is
scored on values hidden by clouds, against the truth, on pixels the neural model never trained
on (nor within the split buffer of one). The validated choice of a run
(:func:`fusecube.evaluate.selection.score_candidates` + ``decide`` on the screened cube, with
the default candidates and with the neural model's own validation added) is reported for
each skill. Writes benchmarks/results/fusion.json (or fusion_quick.json) and prints a table.

    python benchmarks/bench_fusion.py                      # Demak size 671 x 893, three skills
    python benchmarks/bench_fusion.py --quick              # 128 x 128, about 2 minutes
    python benchmarks/bench_fusion.py --size 192x192 --skills rice,none --methods linear,ridge
"""

from __future__ import annotations

import argparse
import copy
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
SKILLS = {"rice": 1.0, "maize-like": 0.63, "none": 0.0}
"""Named radar skills: median per-pixel r(NDVI, VH dB) on paddy about 0.76, 0.57 and 0."""
METHODS = ("linear", "whittaker", "ridge", "fusion")


def _blocks(ny: int, nx: int, halo: int):
    """``(read window, where its core lies in the read, where the core goes)`` per block."""
    from fusecube.cube import X, Y

    for y0 in range(0, ny, BLOCK):
        for x0 in range(0, nx, BLOCK):
            y1, x1 = min(ny, y0 + BLOCK), min(nx, x0 + BLOCK)
            ry0, rx0 = max(0, y0 - halo), max(0, x0 - halo)
            read = {Y: slice(ry0, min(ny, y1 + halo)), X: slice(rx0, min(nx, x1 + halo))}
            core = (slice(y0 - ry0, y1 - ry0), slice(x0 - rx0, x1 - rx0))
            yield read, core, (slice(y0, y1), slice(x0, x1))


def _grid(screened, method: str, model=None):
    """Gap-fill the screened cube block by block, each read with the method's context halo.

    Returns:
        ``(T, Y, X)`` float32 and the seconds spent filling (reads not counted).
    """
    from fusecube.cube import DIMS, NDVI_FUSED, X, Y
    from fusecube.fusion.baselines import gapfill
    from fusecube.fusion.ridge.model import RidgeConfig, fuse_ridge

    ridge = RidgeConfig()
    halo = {"ridge": ridge.window // 2, "fusion": int(model.context_radius) if model else 0}
    ny, nx = screened.sizes[Y], screened.sizes[X]
    out = np.empty((screened.sizes["time"], ny, nx), np.float32)
    seconds = 0.0
    for read, core, dest in _blocks(ny, nx, halo.get(method, 0)):
        block = screened.isel(read).load()
        t0 = time.perf_counter()
        if method == "fusion":
            done = model.predict(block)
        elif method == "ridge":
            done = fuse_ridge(block, config=ridge)
        else:
            done = gapfill(block, method=method)
        seconds += time.perf_counter() - t0
        out[:, dest[0], dest[1]] = done[NDVI_FUSED].transpose(*DIMS).values[:, core[0], core[1]]
    return out, seconds


def _paddy_correlation(screened, paddy: np.ndarray) -> float:
    """Median per-pixel r of NDVI with VH dB over paddy (as measured on the real cubes)."""
    from fusecube.cube import NDVI, VH
    from fusecube.testing.realdata import ndvi_radar_correlation

    values = []
    for read, _, dest in _blocks(screened.sizes["y"], screened.sizes["x"], 0):
        r = ndvi_radar_correlation(screened[[NDVI, VH]].isel(read).load()).values
        values.append(r[paddy[dest]])
    values = np.concatenate(values)
    values = values[np.isfinite(values)]
    return round(float(np.median(values)), 3) if values.size else float("nan")


def _choice(screened, model, mask) -> dict:
    """What ``gapfill: auto`` picks: default candidates, and with the neural model's score."""
    from fusecube.config import RunConfig
    from fusecube.evaluate.choice import decide, fusion_score
    from fusecube.evaluate.selection import score_candidates

    candidates = list(dict.fromkeys(["linear", "whittaker", *RunConfig().gapfill_candidates]))
    candidates = [m for m in candidates if m != "fusion"]
    t0 = time.perf_counter()
    scores, _ = score_candidates(screened, candidates, mask=mask)
    seconds = time.perf_counter() - t0
    out = {"seconds": round(seconds, 2)}
    runs = {"default": copy.deepcopy(scores)}
    fused = fusion_score(model.metrics_) if model is not None else None
    if fused is not None:
        runs["with_fusion"] = [*copy.deepcopy(scores), fused]
    for name, pool in runs.items():
        choice = decide("auto", pool)
        out[name] = {"chosen": choice.chosen, "baseline": choice.baseline, "reason": choice.reason,
                     "verdict": choice.verdict,
                     "radar_check": next((s.params for s in choice.scores if s.method == "ridge"), {}),
                     "scores": {s.method: {"rmse": round(s.rmse, 4), "low": s.low, "high": s.high,
                                           "win_share": s.win_share} for s in choice.scores}}
    return out


def run_skill(size: tuple[int, int], seed: int, skill: float, workdir: Path, config,
              methods: tuple[str, ...], scene: Path | None = None) -> dict:
    """Synthesise (or reuse ``scene``), fill with every method, score, choose; one skill's record."""
    from fusecube.cube import DIMS, NDVI, PADDY_MASK, read_cube
    from fusecube.fusion.neural.validation import (
        holdout_pixels,
        score_groups,
        trained_pixels,
        wet_season,
    )
    from fusecube.quality.gates import apply_screen, screen_periods
    from fusecube.sources.synthetic.scene import SceneConfig
    from fusecube.sources.synthetic.writer import synthesize
    from fusecube.splits import SpatialSplit

    width, height = size
    t0 = time.perf_counter()
    if scene is None:
        paths = synthesize(SceneConfig(width=width, height=height, seed=seed, radar_skill=skill),
                           workdir / f"scene-{skill}")
    else:  # a scene written before by synthesize with the same size, seed and skill
        paths = {"cube": scene / "cube.zarr", "truth": scene / "truth.zarr"}
    synth_s = time.perf_counter() - t0
    cube = read_cube(paths["cube"], chunks={})
    truth = read_cube(paths["truth"], chunks={})
    if (cube.sizes["x"], cube.sizes["y"]) != (width, height):
        raise SystemExit(f"--scene {scene} is {cube.sizes['x']}x{cube.sizes['y']}, not {width}x{height}")
    screened = apply_screen(cube, screen_periods(cube))
    paddy = truth[PADDY_MASK].values > 0

    filled, seconds, model = {}, {}, None
    if "fusion" in methods:
        from fusecube.fusion.neural.model import NeuralFusion

        t0, c0 = time.perf_counter(), time.process_time()
        model = NeuralFusion(config).fit(cube)
        train_s, train_cpu = time.perf_counter() - t0, time.process_time() - c0
        filled["fusion"], predict_s = _grid(screened, "fusion", model)
        seconds["fusion"] = {"train": round(train_s, 2), "predict": round(predict_s, 2),
                             "total": round(train_s + predict_s, 2), "train_cpu": round(train_cpu, 2)}
    for method in (m for m in methods if m != "fusion"):
        filled[method], s = _grid(screened, method)
        seconds[method] = {"train": 0.0, "predict": round(s, 2), "total": round(s, 2)}

    land = truth["land_class"].values > 0
    keep = land
    if model is not None:  # pixels the neural model never trained on, nor next to
        split = SpatialSplit(**model.meta_["config"]["split"])
        trained = trained_pixels(paddy.shape, model.meta_["windows"], split)
        keep = holdout_pixels(trained, split.buffer) & land
    hidden = np.isnan(cube[NDVI].transpose(*DIMS).values)
    true = truth["ndvi_true"].transpose(*DIMS).values
    t = hidden.shape[0]
    keep = keep.reshape(-1)
    target = np.where(hidden, true, np.nan).reshape(t, -1).T[keep]
    wet = wet_season(cube["time"].values, np.where(hidden, np.float32(np.nan), np.float32(0.0))
                     .reshape(t, -1).T)
    accuracy = {name: score_groups(pred.reshape(t, -1).T[keep], target, wet=wet,
                                   paddy=paddy.reshape(-1)[keep])
                for name, pred in filled.items()}
    record = {"radar_skill": skill, "r_ndvi_vh_db_paddy": _paddy_correlation(screened, paddy),
              "holdout_pixels": int(keep.sum()),
              "holdout_paddy_pixels": int((keep & paddy.reshape(-1)).sum()),
              "synth_seconds": round(synth_s, 2), "seconds": seconds,
              "accuracy_hidden_vs_truth_holdout": accuracy,
              "auto_choice": _choice(screened, model, cube[PADDY_MASK])}
    base = min((m for m in ("linear", "whittaker") if m in accuracy),
               key=lambda m: accuracy[m]["all"]["rmse"], default=None)
    record["best_baseline_vs_truth"] = base
    if model is not None:
        record["validation_metrics"] = model.metrics_
        record["training"] = model.meta_["trained_on"]
        record["train_config"] = model.meta_["config"]
        record["device"] = model.meta_["device"]
    return record


def run(size: tuple[int, int], seed: int, skills: dict[str, float], workdir: Path, config,
        methods: tuple[str, ...] = METHODS, scene: Path | None = None) -> dict:
    """Every skill's record, side by side, with the machine it ran on."""
    import torch

    torch.set_num_threads(config.threads)
    width, height = size
    return {
        "size": f"{width}x{height}", "pixels": width * height, "seed": seed,
        "methods": list(methods),
        "skills": {name: run_skill(size, seed, skill, workdir, config, methods, scene)
                   for name, skill in skills.items()},
        "machine": {"cpus": os.cpu_count(), "torch_threads": config.threads,
                    "load_average_at_end": [round(v, 2) for v in os.getloadavg()],
                    "python": platform.python_version(), "torch": torch.__version__},
    }


def table(result: dict) -> str:
    """Plain-text summary: one row per method and skill, then the auto choice per skill."""
    lines = [f"fusion benchmark, {result['size']} seed {result['seed']} (values hidden by clouds, "
             "vs truth, held-out land pixels)",
             f"{'skill':<11} {'r':>5} {'method':<10} {'train s':>7} {'fill s':>6} {'RMSE paddy':>10} "
             f"{'R² paddy':>8} {'RMSE wet':>8} {'RMSE dry':>8} {'RMSE land':>9} {'R² land':>7}"]
    for name, rec in result["skills"].items():
        acc = rec["accuracy_hidden_vs_truth_holdout"]
        for method in (m for m in result["methods"] if m in acc):
            a, s = acc[method], rec["seconds"][method]
            lines.append(f"{name:<11} {rec['r_ndvi_vh_db_paddy']:>5.2f} {method:<10} "
                         f"{s['train']:>7.1f} {s['predict']:>6.1f} {a['paddy']['rmse']:>10.4f} "
                         f"{a['paddy']['r2']:>8.3f} {a['paddy_wet']['rmse']:>8.4f} "
                         f"{a['paddy_dry']['rmse']:>8.4f} {a['all']['rmse']:>9.4f} {a['all']['r2']:>7.3f}")
    lines.append("gapfill: auto (validated on hidden observations of the screened cube):")
    for name, rec in result["skills"].items():
        for pool, choice in ((k, v) for k, v in rec["auto_choice"].items() if k != "seconds"):
            scores = ", ".join(f"{m} {v['rmse']:.4f}" for m, v in choice["scores"].items())
            lines.append(f"  {name:<11} {pool:<12} -> {choice['chosen']:<9} ({scores}; best baseline "
                         f"vs truth: {rec['best_baseline_vs_truth']})")
            lines.append(f"  {'':<11} {'':<12}    {choice['reason']}")
    return "\n".join(lines)


def _skills(text: str) -> dict[str, float]:
    """``rice,none`` or ``rice,0.3`` → ``{"rice": 1.0, "0.3": 0.3}``."""
    out = {}
    for item in (s.strip() for s in text.split(",") if s.strip()):
        value = SKILLS[item] if item in SKILLS else float(item)
        if not 0.0 <= value <= 1.0:
            raise SystemExit(f"--skills: {item} is not a name ({', '.join(SKILLS)}) or a number in [0, 1]")
        out[item] = value
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="128 x 128 scene")
    parser.add_argument("--size", default=None, help="WIDTHxHEIGHT (default 671x893)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skills", default=",".join(SKILLS),
                        help=f"radar skills: names ({', '.join(f'{k}={v}' for k, v in SKILLS.items())}) "
                             "or numbers in [0, 1]")
    parser.add_argument("--methods", default=",".join(METHODS), help="subset of " + ",".join(METHODS))
    parser.add_argument("--arch", default=None, help="mlp | conv | gru (default: TrainConfig)")
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="result JSON path")
    parser.add_argument("--scene", default=None,
                        help="folder of a scene already written by synthesize (same size/seed; "
                             "one skill only)")
    parser.add_argument("--min-steps", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--balance-dates", type=float, default=None)
    parser.add_argument("--holdout-dates", type=float, default=None)
    args = parser.parse_args()
    from fusecube.fusion.neural.train import TrainConfig

    size = args.size or ("128x128" if args.quick else "671x893")
    width, height = (int(v) for v in size.lower().split("x"))
    skills = _skills(args.skills)
    methods = tuple(m for m in METHODS if m in args.methods.split(","))
    if args.scene and len(skills) != 1:
        raise SystemExit("--scene holds one scene: give one --skills value with it")
    config = replace(TrainConfig(), threads=args.threads)
    for key, value in (("arch", args.arch), ("width", args.width), ("min_steps", args.min_steps),
                       ("epochs", args.epochs), ("holdout_dates", args.holdout_dates),
                       ("balance_dates", args.balance_dates)):
        if value is not None:
            config = replace(config, **{key: value})
    with tempfile.TemporaryDirectory(prefix="fusecube-bench-fusion-") as tmp:
        result = run((width, height), args.seed, skills, Path(tmp), config, methods,
                     Path(args.scene) if args.scene else None)
    result["quick"] = args.quick
    out = Path(args.out) if args.out else RESULTS / ("fusion_quick.json" if args.quick else "fusion.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=float))
    print(table(result))
    print(f"written: {out}")


if __name__ == "__main__":
    main()
