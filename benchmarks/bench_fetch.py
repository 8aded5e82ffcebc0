"""STAC fetch benchmark: bytes read for a 10 x 10 km AOI against 110 km scenes, with and
without injected faults, on the loopback STAC API + COG server (no internet).

Writes synthetic Sentinel-2 (B04, B08, SCL) and Sentinel-1 (vv, vh) COGs covering 110 km,
serves them with HTTP range requests, fetches a 10 x 10 km AOI in the middle and compares
the bytes the server sent with (a) the least a windowed reader must fetch — each file's
header plus the compressed tiles the AOI touches — and (b) the whole files. Per-item
progress events are counted. Writes benchmarks/results/fetch.json and prints a table.

    python benchmarks/bench_fetch.py              # 110 km at 20 m (5490 px COGs)
    python benchmarks/bench_fetch.py --quick      # 110 km at 60 m (1830 px)
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
SCENE_KM = 109.8  # a Sentinel-2 MGRS tile
AOI_KM = 10.0


def run(fault_rate: float, scene, aoi, args, seed: int) -> dict:
    from fusecube.grid.geobox import resolve_geobox
    from fusecube.sources.retry import RetryPolicy
    from fusecube.sources.stac.catalogues import Catalogue, StacOptions, s1_spec, s2_spec
    from fusecube.sources.stac.fetch import fetch
    from fusecube.testing import FaultPlan, LoopbackServer
    from fusecube.testing.cog import header_bytes, window_bytes

    plan = FaultPlan(rate=fault_rate, seed=seed, hang_s=2.5, max_consecutive=2)
    events: list[tuple[str, int, int]] = []
    reports: list = []
    gbox = resolve_geobox(aoi, aoi_crs="EPSG:32749", resolution=args.resolution)
    with tempfile.TemporaryDirectory() as tmp, LoopbackServer(scene.root, faults=plan) as srv:
        srv.items = scene.items(srv.url)
        options = StacOptions(catalogue=Catalogue(srv.stac_url, s2_spec(), s1_spec()),
                              retry=RetryPolicy(attempts=6, backoff_s=0.05, max_backoff_s=1.0),
                              timeout_s=2, workers=2)
        t0 = time.perf_counter()
        result = fetch(geobox=gbox, start="2022-01-01", end="2022-01-31",
                       out=Path(tmp) / "cube.zarr", options=options,
                       progress=lambda s, d, t: events.append((s, d, t)),
                       on_item=reports.append)
        seconds = time.perf_counter() - t0
        read = {p: n for p, n in srv.bytes_sent.items() if p.startswith("/files/") and n}
        res = scene.geobox.resolution.x
        col = round((gbox.affine.c - scene.geobox.affine.c) / res)
        row = round((scene.geobox.affine.f - gbox.affine.f) / res)
        win = (slice(row, row + gbox.shape.y), slice(col, col + gbox.shape.x))
        files = [scene.root / Path(p).name for p in read]
        aoi_bytes = sum(header_bytes(f) + window_bytes(f, *win) for f in files)
        file_bytes = sum(f.stat().st_size for f in files)
        sent = sum(read.values())
        faults = srv.faults_injected()
    return {
        "fault_rate": fault_rate, "fault_seed": seed, "seconds": round(seconds, 2), "bytes_read": sent,
        "bytes_read_counted_by_gdal": result.bytes_read,
        "bytes_aoi_windows": aoi_bytes, "bytes_whole_files": file_bytes,
        "ratio_read_to_aoi": round(sent / aoi_bytes, 3),
        "ratio_read_to_files": round(sent / file_bytes, 4),
        "files_read": len(read), "items": result.n_items, "failed_items": len(result.failures),
        "retries": result.retries, "faults_injected": len(faults),
        "fault_kinds": sorted({k for _, k in faults}),
        "item_progress_events": sum(1 for s, _, _ in events if s == "items"),
        "items_log": [{"item": r.item_id, "ok": r.ok, "tries": r.attempts,
                       "bytes": r.bytes_read} for r in reports],
        "period_progress_events": sum(1 for s, _, _ in events if s == "periods"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="60 m scene pixels.")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.resolution = 60.0 if args.quick else 20.0
    logging.basicConfig(level=logging.ERROR)

    from fusecube.testing.scenes import make_scene

    size = round(SCENE_KM * 1000 / args.resolution)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        scene = make_scene(Path(tmp) / "cogs", size=size, resolution=args.resolution,
                           s2_dates=("2022-01-05", "2022-01-10", "2022-01-20", "2022-01-25"),
                           s1_dates=("2022-01-09", "2022-01-21"),
                           blocksize=512, seed=args.seed)
        make_s = time.perf_counter() - t0
        ext = scene.geobox.extent.boundingbox
        cx, cy = (ext.left + ext.right) / 2, (ext.bottom + ext.top) / 2
        half = AOI_KM * 500
        aoi = (cx - half, cy - half, cx + half, cy + half)
        runs = [run(0.0, scene, aoi, args, args.seed)]
        runs += [run(0.3, scene, aoi, args, args.seed + k) for k in range(3)]
    out = {
        "benchmark": "fetch", "scene_km": SCENE_KM, "scene_px": size,
        "scene_resolution_m": args.resolution, "aoi_km": AOI_KM, "cog_tile": 512,
        "make_scene_seconds": round(make_s, 1), "runs": runs,
        "machine": {"python": platform.python_version(), "cpu": platform.processor() or "?"},
        "note": "bytes_aoi_windows = each file's header (IFDs) + compressed tiles the AOI "
                "touches: the least a windowed reader must fetch. Loopback server, so seconds "
                "measure decoding, retries and backoff, not network bandwidth.",
    }
    RESULTS.mkdir(exist_ok=True)
    name = "fetch_quick.json" if args.quick else "fetch.json"
    (RESULTS / name).write_text(json.dumps(out, indent=1))
    print(f"scene {SCENE_KM} km = {size} px at {args.resolution:g} m; AOI {AOI_KM:g} km")
    print(f"{'faults':>7} {'seed':>4} {'s':>6} {'read MB':>8} {'AOI MB':>7} {'files MB':>9} "
          f"{'read/AOI':>8} {'read/files':>10} {'retries':>7} {'failed':>6}")
    for r in runs:
        print(f"{r['fault_rate']:>7.0%} {r['fault_seed']:>4} {r['seconds']:>6.1f} {r['bytes_read'] / 1e6:>8.2f} "
              f"{r['bytes_aoi_windows'] / 1e6:>7.2f} {r['bytes_whole_files'] / 1e6:>9.1f} "
              f"{r['ratio_read_to_aoi']:>8.3f} {r['ratio_read_to_files']:>10.4f} "
              f"{r['retries']:>7} {r['failed_items']:>6}")
    print(f"written {RESULTS / name}")


if __name__ == "__main__":
    main()
