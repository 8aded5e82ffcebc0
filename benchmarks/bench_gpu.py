"""GPU benchmark (issue 21): synthesis, fusion train/predict on CUDA and CPU threads side by side,
the block pipeline with neural fusion, and the cube model's (3-D U-Net) iterations/s.

How to run on the GPU machine (bare: Python 3.12 with torch, numpy, xarray, numba, lightning,
pandas, scipy; no zarr, odc-geo, pydantic, dask, rasterio, sqlalchemy):

    # carry the repository's src/ and benchmarks/ folders; no wheels are needed: when
    # `import fusecube` fails for a missing package, the script loads fusecube's modules from
    # ../src without the package's __init__ and registers import-time stubs for odc.geo (the
    # benchmark never builds a GeoBox). The scene is synthesised in memory (no zarr, no dask).
    python benchmarks/bench_gpu.py                    # Demak size 893 x 671 x 62, < 8 min
    python benchmarks/bench_gpu.py --device cpu --quick   # this 2-core machine, < 2 min

Writes benchmarks/results/gpu.json (gpu_quick.json with --quick) and prints a table. The
held-out scores (validation blocks and dates the model never trained on) are printed for CPU
and CUDA with the same sample, so they can be compared.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import platform
import re
import sys
import time
import types
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

SRC = Path(__file__).resolve().parents[1] / "src"
RESULTS = Path(__file__).resolve().parent / "results"
BLOCK = 256
#: Packages a bare GPU machine lacks that ``import fusecube`` pulls in (not used here).
OPTIONAL = ("odc", "pydantic", "zarr", "dask", "rasterio", "sqlalchemy", "pyproj", "shapely")
#: Quick training options (CPU, this machine): fewer pixels and steps.
QUICK_TRAIN = {"epochs": 2, "min_steps": 60, "max_train_pixels": 6000, "max_val_pixels": 4000}


# ---------------------------------------------------------------------------- imports
def _stub_odc_geo() -> list[str]:
    """Register import-time stand-ins for ``odc.geo`` (only names imported at module level)."""
    class GeoBox:  # noqa: D101 - a stand-in: using it is an error
        def __init__(self, *args, **kwargs) -> None:
            raise RuntimeError("odc-geo is not installed: bench_gpu.py runs without GeoBoxes")

    modules = {"odc": types.ModuleType("odc"), "odc.geo": types.ModuleType("odc.geo"),
               "odc.geo.xr": types.ModuleType("odc.geo.xr"),
               "odc.geo.geobox": types.ModuleType("odc.geo.geobox")}
    modules["odc"].__path__, modules["odc.geo"].__path__ = [], []
    modules["odc.geo.geobox"].GeoBox = GeoBox
    sys.modules.update(modules)
    return list(modules)


def _has(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a parent missing, or blocked (None in sys.modules)
        return False


def import_fusecube() -> str:
    """Make ``fusecube.*`` importable; return how (``installed`` or ``bare src ...``)."""
    try:
        import fusecube  # noqa: F401

        return "installed"
    except ImportError as exc:
        missing = exc.name or str(exc)
    for name in [n for n in sys.modules if n == "fusecube" or n.startswith("fusecube.")]:
        del sys.modules[name]
    package = types.ModuleType("fusecube")
    package.__path__ = [str(SRC / "fusecube")]
    init = (SRC / "fusecube" / "__init__.py").read_text()
    found = re.search(r'__version__ = "([^"]+)"', init)
    package.__version__ = found.group(1) if found else "unknown"
    sys.modules["fusecube"] = package
    stubs = [] if _has("odc.geo.xr") else _stub_odc_geo()
    return f"bare src (missing {missing}; stubs: {', '.join(stubs) or 'none'})"


def check_imports() -> str:
    """Import every module the benchmark uses; the import mode."""
    mode = import_fusecube()
    for name in ("fusecube.sources.synthetic.tiles", "fusecube.sources.synthetic.layout",
                 "fusecube.fusion.neural.model", "fusecube.stages.gapfill", "fusecube.stages.smooth",
                 "fusecube.stages.phenology", "fusecube.ml.training.task",
                 "fusecube.ml.device_windows", "fusecube.quality.input_gates"):
        importlib.import_module(name)
    return mode


# ---------------------------------------------------------------------------- synthesis
def synthesize(height: int, width: int, n_periods: int, seed: int, workers: int):
    """The synthetic Demak-like scene in memory: ``(cube, ndvi_true)`` (same bytes as on disk)."""
    import xarray as xr

    from fusecube.cube import CF_ATTRS, DIMS, NDVI, NDVI_QUALITY, PADDY_MASK, TIME, VH, VV, X, Y
    from fusecube.grid.periods import period_centres
    from fusecube.sources.synthetic.layout import make_layout
    from fusecube.sources.synthetic.scene import PADDY, TILE, SceneConfig
    from fusecube.sources.synthetic.tiles import generate_tile

    cfg = SceneConfig(width=width, height=height, n_periods=n_periods, seed=seed)
    layout = make_layout(cfg, workers=workers)
    names = (VV, VH, NDVI, NDVI_QUALITY)
    arrays = {n: np.empty((n_periods, height, width), np.float32) for n in (*names, "ndvi_true")}
    tiles = [((iy, ix), (slice(y0, min(y0 + TILE, height)), slice(x0, min(x0 + TILE, width))))
             for iy, y0 in enumerate(range(0, height, TILE))
             for ix, x0 in enumerate(range(0, width, TILE))]
    with ThreadPoolExecutor(workers) as pool:
        done = pool.map(lambda tile: generate_tile(cfg, layout, *tile), tiles)
        for (_, (ys, xs)), (cube, truth) in zip(tiles, done, strict=True):
            for name in names:
                arrays[name][:, ys, xs] = cube[name]
            arrays["ndvi_true"][:, ys, xs] = truth["ndvi_true"]
    times = period_centres(cfg.start, n_periods, cfg.period_days)
    ds = xr.Dataset({n: (DIMS, arrays[n], CF_ATTRS[n]) for n in names},
                    coords={TIME: times, Y: np.arange(height), X: np.arange(width)})
    ds[PADDY_MASK] = ((Y, X), (layout.land_class == PADDY).astype(np.uint8))
    ds.attrs["period_days"] = cfg.period_days
    return ds, arrays["ndvi_true"]


# ---------------------------------------------------------------------------- fusion
def blocks(ny: int, nx: int, halo: int, limit: int | None = None):
    """``(read window, core within the read, destination)`` per block, row by row."""
    from fusecube.cube import X, Y

    out = []
    for y0 in range(0, ny, BLOCK):
        for x0 in range(0, nx, BLOCK):
            y1, x1 = min(ny, y0 + BLOCK), min(nx, x0 + BLOCK)
            ry0, rx0 = max(0, y0 - halo), max(0, x0 - halo)
            read = {Y: slice(ry0, min(ny, y1 + halo)), X: slice(rx0, min(nx, x1 + halo))}
            out.append((read, (slice(y0 - ry0, y1 - ry0), slice(x0 - rx0, x1 - rx0)),
                        (slice(y0, y1), slice(x0, x1))))
    return out[:limit] if limit else out


def heldout(metrics: dict) -> dict:
    """Held-out RMSE of fusion and linear (all pixels, paddy) per validation test."""
    out = {}
    for test in ("heldout_spans", "heldout_dates"):
        for method in ("fusion", "linear"):
            for group in ("all", "paddy"):
                value = metrics.get(test, {}).get(method, {}).get(group, {}).get("rmse")
                if value is not None:
                    out[f"{test}_{method}_{group}"] = round(float(value), 4)
    return out


def fusion_run(cube, truth, *, device: str, threads: int, quick: bool, size: str,
               predict_blocks: int | None, models: dict) -> dict:
    """Train on the scene, predict blocks (one ahead on a thread), score against the truth.

    The model and its fit seconds are left in ``models[device]`` for the pipeline.
    """
    from fusecube.cube import DIMS, NDVI, NDVI_FUSED, X, Y
    from fusecube.fusion.neural.model import NeuralFusion
    from fusecube.fusion.neural.prefetch import ahead
    from fusecube.fusion.neural.train import TrainConfig

    config = TrainConfig(device=device, threads=threads, size=size, **(QUICK_TRAIN if quick else {}))
    t0 = time.perf_counter()
    model = NeuralFusion(config).fit(cube)
    fit_s = time.perf_counter() - t0
    models[device] = (model, fit_s)
    parts = blocks(cube.sizes[Y], cube.sizes[X], model.context_radius, predict_blocks)
    sq, n, pixels = 0.0, 0, 0
    t0 = time.perf_counter()
    for (read, core, dest), block in ahead(((p, cube.isel(p[0]).load()) for p in parts), depth=1):
        del read
        filled = model.predict(block)[NDVI_FUSED].transpose(*DIMS).values[:, core[0], core[1]]
        gaps = ~np.isfinite(cube[NDVI].values[:, dest[0], dest[1]])
        err = filled[gaps] - truth[:, dest[0], dest[1]][gaps]
        sq, n, pixels = sq + float(np.sum(err.astype(np.float64) ** 2)), n + err.size, pixels + gaps[0].size
    predict_s = time.perf_counter() - t0
    meta = model.meta_
    result = {"device": device, "threads": threads, "fit_s": round(fit_s, 2),
              "train_s": meta["seconds"]["train"], "train_pixels": meta["trained_on"]["train_pixels"],
              "steps": meta["trained_on"]["steps"], "batching": meta.get("batching"),
              "width": model.arch_["width"], "model_size": meta.get("model_size"),
              "predict_pixels": pixels, "predict_s": round(predict_s, 2),
              "predict_pixels_per_s": round(pixels / max(predict_s, 1e-9)),
              "truth_rmse_gaps": round(float(np.sqrt(sq / max(n, 1))), 4), **heldout(model.metrics_)}
    return result


def pipeline_run(cube, model, fit_s: float) -> dict:
    """The block pipeline with neural fusion (screen, gap-fill, smooth, phenology), products excluded."""
    from fusecube.cube import NDVI, TIME, X, Y
    from fusecube.errors import CubeSchemaError
    from fusecube.fusion.neural.prefetch import ahead
    from fusecube.quality.input_gates import apply_screen, screen_periods
    from fusecube.stages.gapfill import GapfillConfig, gapfill
    from fusecube.stages.phenology import phenology
    from fusecube.stages.smooth import smooth

    t0 = time.perf_counter()
    try:
        screen = screen_periods(cube)
        screened = "input gates"

        def apply(block):
            return apply_screen(block, screen)
    except CubeSchemaError:  # no odc-geo here (no GeoBox): screen the all-zero dates only
        ndvi = cube[NDVI].values
        zero = cube[TIME].copy(data=np.nanmax(np.abs(np.nan_to_num(ndvi)), axis=(1, 2)) == 0)
        screened = f"all-zero dates only ({int(zero.sum())})"

        def apply(block):
            return block.assign({NDVI: block[NDVI].where(~zero)})
    seconds = {"screen": time.perf_counter() - t0, "gapfill": 0.0, "smooth": 0.0, "phenology": 0.0}
    t0 = time.perf_counter()
    parts = blocks(cube.sizes[Y], cube.sizes[X], model.context_radius)
    for _, block in ahead(((p, cube.isel(p[0]).load()) for p in parts), depth=1):
        t = time.perf_counter()
        block = gapfill(apply(block), config=GapfillConfig(method="fusion"), model=model)
        seconds["gapfill"] += time.perf_counter() - t
        t = time.perf_counter()
        block = smooth(block)
        seconds["smooth"] += time.perf_counter() - t
        t = time.perf_counter()
        phenology(block)
        seconds["phenology"] += time.perf_counter() - t
    blocks_s = time.perf_counter() - t0
    return {"fusion_train_s": round(fit_s, 2), "blocks_s": round(blocks_s, 2),
            "total_s": round(fit_s + seconds["screen"] + blocks_s, 2),
            "stages_s": {k: round(v, 2) for k, v in seconds.items()}, "blocks": len(parts),
            "screen": screened}


# ---------------------------------------------------------------------------- U-Net
def unet_run(cube, *, device: str, seconds: float, batch_sizes: tuple[int, ...]) -> dict:
    """U-Net iterations/s on windows cut on the device, then held-out RMSE vs linear."""
    import torch

    from fusecube.cube import NDVI, VH, VV
    from fusecube.ml.device_windows import DeviceWindows
    from fusecube.ml.training.task import CubeFusionTask, _hide_dates, observed
    from fusecube.splits import SpatialSplit
    from fusecube.units import to_db

    radar = np.stack([to_db(cube[v].values) for v in (VV, VH)]).astype(np.float32)
    mean = np.nanmean(radar, axis=(1, 2, 3), keepdims=True)
    std = np.nanstd(radar, axis=(1, 2, 3), keepdims=True)
    image, target = (radar - mean) / std, cube[NDVI].values[None].astype(np.float32)
    val_px = SpatialSplit(block=48, val_fraction=0.25, buffer=0).val_blocks(image.shape[-2:])
    train_px = ~val_px  # windows wholly outside the validation blocks, scored wholly inside
    cuda = device.startswith("cuda")
    out: dict = {"device": device, "window": [16, 32, 32]}

    def step_loop(task, windows, opt, steps: int | None, budget: float) -> tuple[int, float]:
        done, t0 = 0, time.perf_counter()
        while (steps is None or done < steps) and time.perf_counter() - t0 < budget:
            batch = windows.batch()
            valid = observed(batch)
            g = torch.Generator().manual_seed(done)
            hidden = _hide_dates(valid, rate=(0.2, 0.6), spans=1, max_span=6, generator=g)
            shown = valid & ~hidden
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=cuda):
                pred = task(task.inputs(batch["image"], batch["mask"], batch["target"], shown))
                loss = task.weighting(task.losses(pred, batch, hidden, shown))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            done += 1
        if cuda:
            torch.cuda.synchronize()
        return done, time.perf_counter() - t0

    for batch_size in batch_sizes:
        torch.manual_seed(0)
        task = CubeFusionTask().to(device)
        opt = task.configure_optimizers()
        windows = DeviceWindows(image, target, size=32, time_window=16, batch_size=batch_size,
                                device=device, allowed=train_px)
        step_loop(task, windows, opt, 3, 60.0)  # warm-up (cuDNN autotune, allocator)
        done, spent = step_loop(task, windows, opt, None, seconds / (len(batch_sizes) + 1))
        out[f"iters_per_s_batch{batch_size}"] = round(done / spent, 2)
    # the last task keeps training for the rest of the budget, then is scored on held-out blocks
    done, spent = step_loop(task, windows, opt, None, seconds / (len(batch_sizes) + 1))
    out["train_steps"], out["train_s"] = int(done), round(spent, 1)
    val = DeviceWindows(image, target, size=32, time_window=16, batch_size=16, device=device,
                        allowed=val_px, seed=1)
    sq = {"unet": 0.0, "linear": 0.0}
    n = 0
    task.eval()
    with torch.no_grad():
        for i in range(8):
            batch = val.batch()
            valid = observed(batch)
            hidden = _hide_dates(valid, rate=(0.3, 0.3), spans=1, max_span=6,
                                 generator=torch.Generator().manual_seed(10_000 + i))
            x = task.inputs(batch["image"], batch["mask"], batch["target"], valid & ~hidden)
            obs = batch["target"][hidden]
            sq["unet"] += float(((task(x).float().clamp(-1, 1)[hidden] - obs) ** 2).sum())
            sq["linear"] += float(((x[:, -1:].float()[hidden] - obs) ** 2).sum())
            n += int(hidden.sum())
    for name, value in sq.items():
        out[f"heldout_rmse_{name}"] = round((value / max(n, 1)) ** 0.5, 4)
    return out


# ---------------------------------------------------------------------------- main
def _run(name: str, results: dict, fn, *args, **kwargs):
    """Run one section; a failure is recorded (and printed) and the other sections go on."""
    print(f"... {name}", flush=True)
    try:
        results[name] = fn(*args, **kwargs)
    except Exception as exc:  # one broken section must not lose the others' numbers
        results[name] = {"error": f"{type(exc).__name__}: {exc}"}
        print(f"    {name} failed: {results[name]['error']}", flush=True)
    return results[name]


def table(results: dict) -> str:
    """A plain-text table of the headline numbers."""
    rows = [("synthesis", f"{results.get('synthesis', {}).get('seconds', 'n/a')} s")]
    for key in ("fusion_cuda", "fusion_cpu"):
        r = results.get(key)
        if r and "error" not in r:
            rows.append((key, f"train {r['train_s']} s (fit {r['fit_s']} s, width {r['width']}, "
                              f"{r['train_pixels']} px), predict {r['predict_pixels_per_s']} px/s, "
                              f"held-out spans RMSE all {r.get('heldout_spans_fusion_all')} paddy "
                              f"{r.get('heldout_spans_fusion_paddy')} (linear "
                              f"{r.get('heldout_spans_linear_paddy')}), truth gaps {r['truth_rmse_gaps']}"))
        elif r:
            rows.append((key, r["error"]))
    p = results.get("pipeline")
    if p:
        rows.append(("pipeline", p.get("error") or f"total {p['total_s']} s (fusion_train "
                                                   f"{p['fusion_train_s']} s, blocks {p['blocks_s']} s)"))
    u = results.get("unet")
    if u:
        rows.append(("unet", u.get("error") or ", ".join(f"{k} {v}" for k, v in u.items()
                                                          if k.startswith(("iters", "heldout")))))
    return "\n".join(f"{k:<12} {v}" for k, v in rows)


def main(argv: list[str] | None = None) -> dict:
    """Parse options, run the sections, write the JSON and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--quick", action="store_true", help="96 x 96 scene, short training")
    parser.add_argument("--size", default=None, help="HxW (default 893x671, quick 128x128)")
    parser.add_argument("--periods", type=int, default=62)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--unet-seconds", type=float, default=None)
    parser.add_argument("--check-imports", action="store_true", help="only import, then exit")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    mode = check_imports()
    if args.check_imports:
        print(f"imports ok ({mode})")
        return {"import_mode": mode}
    import torch

    height, width = (int(v) for v in (args.size or ("96x96" if args.quick else "893x671")).split("x"))
    cuda = torch.cuda.is_available() and args.device in ("auto", "cuda")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    results: dict = {"import_mode": mode, "machine": {
        "python": platform.python_version(), "torch": torch.__version__, "cpu_cores": cores,
        "gpu": torch.cuda.get_device_name(0) if cuda else None},
        "scene": {"height": height, "width": width, "periods": args.periods, "seed": args.seed},
        "quick": args.quick}
    t0 = time.perf_counter()
    cube, truth = synthesize(height, width, args.periods, args.seed, workers=cores)
    results["synthesis"] = {"seconds": round(time.perf_counter() - t0, 2)}
    models: dict = {}
    if cuda:
        _run("fusion_cuda", results, fusion_run, cube, truth, device="cuda", threads=cores,
             quick=args.quick, size="auto", predict_blocks=None, models=models)
    # CPU threads: the small model (the CPU rule), predicting a few blocks (pixels/s)
    _run("fusion_cpu", results, fusion_run, cube, truth, device="cpu", threads=cores,
         quick=args.quick, size="fixed", predict_blocks=None if args.quick else 2, models=models)
    model_device = "cuda" if cuda else "cpu"
    if model_device in models:
        _run("pipeline", results, pipeline_run, cube, *models[model_device])
    seconds = args.unet_seconds or (10.0 if args.quick else 90.0)
    _run("unet", results, unet_run, cube, device=model_device, seconds=seconds,
         batch_sizes=(4, 32) if cuda else (4,))
    out = args.out or RESULTS / ("gpu_quick.json" if args.quick else "gpu.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, default=str))
    print(table(results))
    print(f"wrote {out}")
    return results


if __name__ == "__main__":
    main()
