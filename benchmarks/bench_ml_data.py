"""ML data benchmark: patch export throughput, epoch throughput, peak RSS over a big shard set.

1. Export: synthesise a scene (not timed), export 256 px patches (vv, vh, stride 128); 4-D
   samples/s of the CubeDataModule on that scene; peak RSS of exporting a cube of about 1 GB
   (62 x 2048 x 2048 vh) with read budgets of 256 and 32 MB, in a fresh process each.
2. Epoch throughput (patches/s) of 256 x 256 single-channel patches with the DataModule's
   training transform (dB, clip, [0, 1], flips/rotations), batch 8: lazy memory-mapped vs in
   memory, DataLoader with 0 and 2 workers.
3. Peak memory while iterating a shard set several times larger than the RSS target (default
   4 GB of shards, target 1 GB) in a fresh process, sampled every 50 ms: RSS of the main
   process, RSS summed over main + workers (counts shared pages once per process) and PSS
   summed over them (shared pages split fairly; the number compared with the target).

Writes benchmarks/results/ml_data.json (ml_data_quick.json with --quick) and prints a table.

    python benchmarks/bench_ml_data.py            # 4 GB shard set
    python benchmarks/bench_ml_data.py --quick    # 0.5 GB, under a minute or two
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
SIZE = 256
PATCH_MB = SIZE * SIZE * 4 / 2**20


def bench_export(workdir: Path, width: int, height: int, periods: int) -> dict:
    from fusecube.ml.patches.export import PatchExportConfig, export_patches
    from fusecube.sources.synthetic.scene import SceneConfig
    from fusecube.sources.synthetic.writer import synthesize

    t0 = time.perf_counter()
    paths = synthesize(SceneConfig(width=width, height=height, seed=0, n_periods=periods),
                       workdir / "scene")
    synth_s = time.perf_counter() - t0
    cfg = PatchExportConfig(size=SIZE, stride=SIZE // 2, variables=("vv", "vh"), db=True,
                            shard_size=64)
    t0 = time.perf_counter()
    ps = export_patches(paths["cube"], workdir / "exported", cfg)
    seconds = time.perf_counter() - t0
    mb = sum(p.stat().st_size for p in ps.shard_paths) / 2**20
    return {"scene": f"{width}x{height}x{periods}", "synth_s": round(synth_s, 2),
            "patches": ps.count, "skipped": ps.meta["counts"]["skipped_invalid"],
            "channels": 2, "seconds": round(seconds, 3),
            "patches_per_s": round(ps.count / seconds, 1), "mb_per_s": round(mb / seconds, 1)}


def write_set(root: Path, n: int, shard_size: int = 256, seed: int = 0) -> None:
    """A synthetic single-channel linear sigma0 patch set of ``n`` 256 px patches."""
    from fusecube.ml.patches.shards import ShardWriter, write_metadata

    root.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    base = (0.02 * rng.gamma(4.5, 1 / 4.5, size=(shard_size, 1, SIZE, SIZE))).astype(np.float32)
    writer = ShardWriter(root, shard_size)
    side = int(np.ceil(np.sqrt(n)))
    for start in range(0, n, shard_size):
        k = min(shard_size, n - start)
        idx = np.arange(start, start + k)
        writer.add(base[:k] * np.float32(1 + 0.1 * (start // shard_size % 7)), {
            "source": [0] * k, "time": ["2024-01-01T00:00:00"] * k, "time_index": [0] * k,
            "row": ((idx // side) * SIZE).tolist(), "col": ((idx % side) * SIZE).tolist(),
            "bbox": [[0, 0, 1, 1]] * k})
    writer.close()
    write_metadata(root, shards=writer.shards, table=writer.table, variables=["vh"],
                   patch_shape=(1, SIZE, SIZE), sources=[{"path": "bench", "times": ["t"]}],
                   preprocessing={"units": {"vh": "linear"}}, counts={})


def epoch(root: Path, *, lazy: bool, workers: int, batch: int = 8) -> dict:
    import torch

    from fusecube.ml.datamodules import SARDataModule

    torch.set_num_threads(1)
    dm = SARDataModule(root, batch_size=batch, num_workers=workers, lazy=lazy, pin_memory=False,
                       block_size=4 * SIZE)
    t0 = time.perf_counter()
    dm.setup()
    setup_s = time.perf_counter() - t0
    n = 0
    t0 = time.perf_counter()
    for b in dm.train_dataloader():
        n += b["image"].shape[0]
    seconds = time.perf_counter() - t0
    return {"lazy": lazy, "workers": workers, "patches": n, "setup_s": round(setup_s, 2),
            "seconds": round(seconds, 2), "patches_per_s": round(n / seconds, 1),
            "mb_per_s": round(n * PATCH_MB / seconds, 1)}


def _iterate_child(root: str, workers: int, epochs: int) -> None:
    """Run in a fresh process: iterate the lazy dataset, print patches and seconds."""
    import torch
    from torch.utils.data import DataLoader

    from fusecube.ml.datasets import LazyPatchDataset
    from fusecube.ml.samplers import SeededShuffle
    from fusecube.ml.sar import SARPreprocessing
    from fusecube.ml.transforms import Compose, FlipRotate, Preprocess

    torch.set_num_threads(1)
    params = SARPreprocessing.from_dict({"db": True, "norm": "minmax", "mean": [], "std": [],
                                         "clip": {"method": "fixed", "low": [-30.0],
                                                  "high": [0.0], "params": {}}})
    ds = LazyPatchDataset(root, transform=Compose([Preprocess(params), FlipRotate()]))
    sampler = SeededShuffle(len(ds), 0)
    loader = DataLoader(ds, batch_size=8, sampler=sampler, num_workers=workers)
    n, t0 = 0, time.perf_counter()
    for e in range(epochs):
        sampler.set_epoch(e)
        for b in loader:
            n += b["image"].shape[0]
    print(json.dumps({"patches": n, "seconds": time.perf_counter() - t0}))


def sample_memory(cmd: list[str]) -> tuple[dict, dict]:
    """Run ``cmd`` (printing a JSON line last); peak RSS main / all processes and PSS, in MB."""
    import psutil

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    ps = psutil.Process(proc.pid)
    peak_main = peak_total = peak_pss = 0.0
    while proc.poll() is None:
        try:
            procs = [ps, *ps.children(recursive=True)]
            rss = [p.memory_info().rss / 2**20 for p in procs]
            # PSS shares pages between the processes fairly (RSS sums count shared libs twice)
            pss = sum(p.memory_full_info().pss for p in procs) / 2**20
        except psutil.Error:
            continue
        peak_main = max(peak_main, rss[0])
        peak_total = max(peak_total, sum(rss))
        peak_pss = max(peak_pss, pss)
        time.sleep(0.05)
    if proc.returncode:
        raise RuntimeError(f"{cmd} failed with exit code {proc.returncode}")
    out = json.loads(proc.stdout.read().strip().splitlines()[-1])
    return out, {"peak_rss_mb": round(peak_total, 0), "peak_rss_main_mb": round(peak_main, 0),
                 "peak_pss_all_mb": round(peak_pss, 0)}


def peak_rss(root: Path, workers: int, epochs: int) -> dict:
    out, mem = sample_memory([sys.executable, __file__, "--child", str(root), str(workers),
                              str(epochs)])
    return {"workers": workers, "epochs": epochs, "patches": out["patches"],
            "seconds": round(out["seconds"], 1),
            "patches_per_s": round(out["patches"] / out["seconds"], 1), **mem}


def write_big_cube(path: Path, side: int, periods: int) -> float:
    """A ``periods x side x side`` vh cube (random speckle) written chunk by chunk; its MB."""
    import dask.array as da
    import xarray as xr
    from odc.geo.geobox import GeoBox

    from fusecube.cube import DIMS, with_geobox, write_cube
    from fusecube.grid.periods import period_centres

    rs = da.random.RandomState(0)
    vh = rs.gamma(4.5, 0.02 / 4.5, size=(periods, side, side),
                  chunks=(periods, 256, 256)).astype(np.float32)
    ds = xr.Dataset({"vh": (DIMS, vh)}, coords={"time": period_centres("2023-11-01", periods, 12)})
    gbox = GeoBox.from_bbox((400000, 9100000, 400000 + 50 * side, 9100000 + 50 * side),
                            "EPSG:32749", resolution=50)
    write_cube(with_geobox(ds, gbox), path)
    return periods * side * side * 4 / 2**20


def _export_child(cube: str, out: str, budget_mb: float) -> None:
    """Run in a fresh process: export 256 px vh patches with a read budget, print counts."""
    from fusecube.ml.patches.export import PatchExportConfig, export_patches

    t0 = time.perf_counter()
    ps = export_patches(cube, out, PatchExportConfig(size=SIZE, variables=("vh",),
                                                     max_block_mb=budget_mb), overwrite=True)
    print(json.dumps({"patches": ps.count, "seconds": time.perf_counter() - t0}))


def export_memory(cube: Path, out: Path, budget_mb: float) -> dict:
    res, mem = sample_memory([sys.executable, __file__, "--export-child", str(cube), str(out),
                              str(budget_mb)])
    shutil.rmtree(out, ignore_errors=True)
    return {"max_block_mb": budget_mb, "patches": res["patches"],
            "seconds": round(res["seconds"], 1),
            "patches_per_s": round(res["patches"] / res["seconds"], 1), **mem}


def cube_samples(cube: Path, truth: Path, workers: int) -> dict:
    """4-D samples/s of the CubeDataModule (64 px, 8 periods, vv+vh, ndvi_true target)."""
    import torch

    from fusecube.ml.datamodules import CubeDataModule

    torch.set_num_threads(1)
    dm = CubeDataModule([cube], targets=[truth], target_variables=("ndvi_true",), size=64,
                        time_window=8, stride=32, block_size=128, batch_size=4, num_workers=workers,
                        pin_memory=False, stats_cache=None)
    t0 = time.perf_counter()
    dm.setup()
    setup_s = time.perf_counter() - t0
    n, t0 = 0, time.perf_counter()
    for b in dm.train_dataloader():
        n += b["image"].shape[0]
    seconds = time.perf_counter() - t0
    return {"workers": workers, "samples": n, "sample_shape": list(b["image"].shape[1:]),
            "setup_s": round(setup_s, 2), "seconds": round(seconds, 2),
            "samples_per_s": round(n / seconds, 1)}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _iterate_child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--export-child":
        _export_child(sys.argv[2], sys.argv[3], float(sys.argv[4]))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes")
    ap.add_argument("--big-gb", type=float, default=None, help="size of the big shard set")
    ap.add_argument("--rss-target-mb", type=float, default=1024.0)
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    big_gb = args.big_gb or (0.5 if args.quick else 4.0)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="fusecube-bench-ml-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        export = bench_export(work, *((256, 256, 8) if args.quick else (512, 512, 24)))
        print(f"export  {export['patches']} patches ({export['scene']}, 2 ch, stride 128): "
              f"{export['patches_per_s']} patches/s, {export['mb_per_s']} MB/s")
        cubes = []
        for workers in (0, 2):
            r = cube_samples(work / "scene" / "cube.zarr", work / "scene" / "truth.zarr", workers)
            cubes.append(r)
            print(f"cube    4-D samples {tuple(r['sample_shape'])} workers={workers}: "
                  f"{r['samples_per_s']} samples/s ({r['samples']} samples, setup {r['setup_s']} s)")
        side, periods = (768, 24) if args.quick else (2048, 62)
        t0 = time.perf_counter()
        cube_mb = write_big_cube(work / "big_cube.zarr", side, periods)
        cube_write_s = time.perf_counter() - t0
        export_mem = []
        for budget in (256.0, 32.0):
            r = export_memory(work / "big_cube.zarr", work / "big_export", budget)
            export_mem.append(r)
            print(f"export  {cube_mb:.0f} MB cube ({periods}x{side}x{side} vh), read budget "
                  f"{budget:.0f} MB: peak RSS {r['peak_rss_main_mb']:.0f} MB, "
                  f"{r['patches_per_s']} patches/s ({r['patches']} patches)")
        small_n = 128 if args.quick else 1024
        write_set(work / "small", small_n)
        epochs = []
        for lazy in (True, False):
            for workers in (0, 2):
                r = epoch(work / "small", lazy=lazy, workers=workers)
                epochs.append(r)
                print(f"epoch   {'lazy  ' if lazy else 'memory'} workers={workers}: "
                      f"{r['patches_per_s']} patches/s ({r['patches']} patches, "
                      f"{r['seconds']} s, setup {r['setup_s']} s)")
        big_n = int(big_gb * 2**30 / (SIZE * SIZE * 4))
        t0 = time.perf_counter()
        write_set(work / "big", big_n)
        write_s = time.perf_counter() - t0
        big_mb = big_n * PATCH_MB
        rss = []
        for workers in (0, 2):
            r = peak_rss(work / "big", workers, epochs=1)
            r["under_target"] = r["peak_pss_all_mb"] <= args.rss_target_mb
            rss.append(r)
            print(f"rss     {big_mb / 1024:.1f} GB set, workers={workers}: peak RSS main "
                  f"{r['peak_rss_main_mb']:.0f} MB, all processes {r['peak_rss_mb']:.0f} MB "
                  f"(PSS {r['peak_pss_all_mb']:.0f} MB; target {args.rss_target_mb:.0f} MB), "
                  f"{r['patches_per_s']} patches/s")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    import torch

    result = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "python": platform.python_version(), "numpy": np.__version__,
                    "torch": torch.__version__,
                    "note": "shared machine; wall-clock numbers are noisy"},
        "export": export, "cube_samples": cubes,
        "export_memory": {"cube_mb": round(cube_mb, 0), "cube": f"{periods}x{side}x{side}",
                          "cube_write_s": round(cube_write_s, 1), "runs": export_mem},
        "epoch": epochs,
        "big_set": {"patches": big_n, "mb": round(big_mb, 0), "write_s": round(write_s, 1),
                    "rss_target_mb": args.rss_target_mb, "runs": rss},
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / ("ml_data_quick.json" if args.quick else "ml_data.json")
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
