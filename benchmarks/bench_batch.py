"""Batch benchmark: 166 synthetic AOIs end to end (tiles only), resume cost, and a batch against
the loopback STAC API + COG server with injected faults (no internet).

1. ``synthetic``: 166 AOIs of 32 x 32 px (10 m) across Central Java, each a seeded synthetic
   scene (by AOI id) cut into 16 px tiles: seconds, AOIs/min, tiles, failures; then a training
   stage on the tiles (tiny VV -> VH net, held-out AOIs).
2. ``resume``: the finished batch resumed (nothing to do: the fixed cost of --resume), and a
   batch killed after half its AOIs then resumed: AOIs redone that had finished (must be 0).
3. ``stac``: AOIs at the centres of the 256 px COG tiles of a 20 km fake scene plus one AOI
   whose files answer HTTP 500, one all-cloudy, one outside coverage, one invalid; 5 % random
   faults on the good files. Bytes the server sent per AOI vs the AOI windows (COG header +
   tiles touched) vs the whole scene files.

Writes benchmarks/results/batch.json and prints a table.

    python benchmarks/bench_batch.py            # 166 synthetic AOIs, 60 STAC AOIs
    python benchmarks/bench_batch.py --quick    # 24 and 12
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
START, END = "2023-11-01", "2024-04-30"


def write_csv(path: Path, rows: list[dict]) -> Path:
    cols = list(dict.fromkeys(k for r in rows for k in r))
    path.write_text("\n".join([",".join(cols)] + [",".join(str(r.get(c, "")) for c in cols)
                                                  for r in rows]) + "\n")
    return path


def synthetic_rows(n: int) -> list[dict]:
    # a grid of locations over Central Java (~110-111.5 E, 6.6-7.4 S)
    side = int(n ** 0.5) + 1
    return [{"id": f"site{i:03d}", "lon": round(110.0 + 1.5 * (i % side) / side, 5),
             "lat": round(-6.6 - 0.8 * (i // side) / side, 5), "size_km": 0.32} for i in range(n)]


def bench_synthetic(tmp: Path, n: int, concurrency: int) -> dict:
    from fusecube.batch import BatchConfig, run_batch
    from fusecube.batch.train import train_on_batch

    csv = write_csv(tmp / "synthetic.csv", synthetic_rows(n))
    config = BatchConfig(out=tmp / "synthetic", start=START, end=END, produce=("patches",),
                         patch_size=16, concurrency=concurrency)
    t0 = time.perf_counter()
    result = run_batch(csv, config)
    seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    resumed = run_batch(csv, config, resume=True)
    noop_resume_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    training = train_on_batch(tmp / "synthetic", epochs=2, batch_size=64)
    training["seconds"] = round(time.perf_counter() - t0, 2)
    t = result.totals
    return {"aois": n, "concurrency": concurrency, "seconds": round(seconds, 2),
            "aois_per_min": round(60 * n / seconds, 1), "tiles": t["tiles"],
            "states": t["states"], "failures": {r.aoi_id: r.reason for r in result.records
                                                if r.state == "failed"},
            "mean_aoi_seconds": round(t["seconds"] / max(n, 1), 3),
            "noop_resume_seconds": round(noop_resume_s, 2), "noop_resume_ran": len(resumed.ran),
            "training": training}


def bench_kill_resume(tmp: Path, n: int) -> dict:
    from fusecube.batch import BatchConfig, batch_status, run_batch

    csv = write_csv(tmp / "kill.csv", synthetic_rows(n))
    out = tmp / "kill"
    code = ("from fusecube.batch import run_batch, BatchConfig\n"
            f"run_batch({str(csv)!r}, BatchConfig(out={str(out)!r}, start={START!r}, end={END!r}, "
            "produce=('patches',), patch_size=16, concurrency=2))\n")
    env = {**os.environ, "FUSECUBE_TEST_KILL_AT": f"batch_aoi_done:{n // 2}"}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    killed_s = time.perf_counter() - t0
    before = {r.aoi_id: r for r in batch_status(out)["records"]}
    finished = {k for k, r in before.items() if r.state == "done"}
    t0 = time.perf_counter()
    result = run_batch(csv, BatchConfig(out=out, start=START, end=END, produce=("patches",),
                                        patch_size=16, concurrency=2), resume=True)
    resume_s = time.perf_counter() - t0
    redone = sorted(set(result.ran) & finished)
    return {"aois": n, "killed_rc": proc.returncode, "seconds_before_kill": round(killed_s, 2),
            "done_at_kill": len(finished),
            "in_flight_at_kill": sum(r.state in ("fetching", "processing") for r in before.values()),
            "resume_seconds": round(resume_s, 2), "resumed_ran": len(result.ran),
            "finished_aois_redone": len(redone), "states_after": result.totals["states"]}


def bench_stac(tmp: Path, n_ok: int, concurrency: int) -> dict:
    from odc.geo import geom
    from odc.geo.geobox import GeoBox

    from fusecube.batch import BatchConfig, run_batch
    from fusecube.testing import Fault, FaultPlan, LoopbackServer
    from fusecube.testing.cog import header_bytes, window_bytes, write_cog
    from fusecube.testing.scenes import make_scene
    from fusecube.testing.stac import make_item

    size, tile, aoi_px = 2048, 256, 32
    root = tmp / "cogs"
    scene = make_scene(root, size=size, blocksize=tile, s2_dates=("2022-01-05", "2022-01-30"),
                       s1_dates=("2022-01-09",))
    a = scene.geobox
    b_box = GeoBox((tile, tile), a.affine * a.affine.translation(size + 500, 0), a.crs)
    c_box = GeoBox((tile, tile), a.affine * a.affine.translation(size + 1000, 0), a.crs)
    b_files = []
    for acq in scene.s2:
        for band, key in (("B04", "red_dn"), ("B08", "nir_dn"), ("SCL", "scl")):
            b_files.append(f"B_{acq['id']}_{band}.tif")
            write_cog(root / b_files[-1], acq[key][:tile, :tile], b_box, nodata=0)
    for acq in scene.s1:
        for band in ("vv", "vh"):
            b_files.append(f"B_{acq['id']}_{band}_lin.tif")
            write_cog(root / b_files[-1], acq[band][:tile, :tile], b_box, nodata=-32768.0)

    def lonlat(gbox, row, col):
        x, y = gbox.affine * (col, row)
        return tuple(round(v, 7) for v in geom.point(x, y, gbox.crs).to_crs("EPSG:4326").coords[0])

    per_row = size // tile
    rows, windows = [], {}
    for k in range(n_ok):
        iy, ix = divmod(k, per_row)
        lon, lat = lonlat(a, iy * tile + tile // 2, ix * tile + tile // 2)
        rows.append({"id": f"ok{k:03d}", "lon": lon, "lat": lat, "size_km": aoi_px * 10 / 1000})
        lo = tile // 2 - aoi_px // 2
        windows[f"ok{k:03d}"] = (slice(iy * tile + lo, iy * tile + lo + aoi_px),
                                 slice(ix * tile + lo, ix * tile + lo + aoi_px))
    for name, box in (("server_errors", b_box), ("cloudy", c_box)):
        lon, lat = lonlat(box, tile // 2, tile // 2)
        rows.append({"id": name, "lon": lon, "lat": lat, "size_km": 0.32})
    lon, lat = lonlat(a, -3000, 500)
    rows.append({"id": "outside", "lon": lon, "lat": lat, "size_km": 0.32})
    rows.append({"id": "bad_geometry", "lon": lon, "lat": -123, "size_km": 0.32})
    csv = write_csv(tmp / "stac.csv", rows)
    script = {f"/files/{name}": [Fault.ERROR_500] * 500 for name in b_files}
    plan = FaultPlan(rate=0.05, seed=7, kinds=(Fault.ERROR_500, Fault.ERROR_503, Fault.TOO_MANY,
                                               Fault.TRUNCATE), script=script, max_consecutive=2)
    with LoopbackServer(root, faults=plan) as srv:
        items = scene.items(srv.url)
        for acq in scene.s2:
            props = {"eo:cloud_cover": acq["cloud"], "s2:processing_baseline": acq["baseline"]}
            items.append(make_item(f"B_{acq['id']}", acq["time"], b_box, {
                band: f"{srv.url}/files/B_{acq['id']}_{band}.tif" for band in ("B04", "B08", "SCL")},
                properties=props))
            items.append(make_item(f"C_{acq['id']}", acq["time"], c_box, {
                band: f"{srv.url}/files/C_{acq['id']}_{band}.tif" for band in ("B04", "B08", "SCL")},
                properties={**props, "eo:cloud_cover": 97.0}))
        for acq in scene.s1:
            items.append(make_item(f"B_{acq['id']}", acq["time"], b_box, {
                band: f"{srv.url}/files/B_{acq['id']}_{band}_lin.tif" for band in ("vv", "vh")},
                collection="sentinel-1-rtc"))
        srv.items = items
        config = BatchConfig(out=tmp / "stac", source="stac", start="2022-01-01", end="2022-02-05",
                             stac_url=srv.stac_url, patch_size=16, concurrency=concurrency,
                             retries=3, retry_backoff_s=0.05, gdal_retries=2, timeout_s=5)
        t0 = time.perf_counter()
        result = run_batch(csv, config)
        seconds = time.perf_counter() - t0
        scene_files = {p: n for p, n in srv.bytes_sent.items() if p.startswith("/files/S") and n}
        faults = len(srv.faults_injected())
    sent = sum(scene_files.values())
    whole_scene = sum(f.stat().st_size for f in root.glob("S*.tif") if "_db" not in f.name)
    window_total = sum(header_bytes(root / Path(p).name) + window_bytes(root / Path(p).name, *win)
                       for win in windows.values() for p in scene_files)
    recs = {r.aoi_id: r for r in result.records}
    done = [r for r in result.records if r.state == "done"]
    return {"aois": len(rows), "ok_aois": n_ok, "concurrency": concurrency,
            "seconds": round(seconds, 2), "aois_per_min": round(60 * len(rows) / seconds, 1),
            "states": result.totals["states"], "tiles": result.totals["tiles"],
            "faults_injected": faults,
            "failures": {k: r.reason for k, r in recs.items() if r.state == "failed"},
            "bytes_sent_scene_files": sent,
            "bytes_per_done_aoi": round(sent / max(len(done), 1)),
            "aoi_window_bytes_total": window_total,
            "sent_over_windows": round(sent / window_total, 3),
            "whole_scene_bytes": whole_scene,
            "per_aoi_over_whole_scene": round(sent / max(len(done), 1) / whole_scene, 4),
            "ledger_bytes_done_aois": sum(r.bytes_read for r in done)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="24 synthetic and 12 STAC AOIs.")
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    n_syn, n_stac, n_kill = (24, 12, 8) if args.quick else (166, 60, 30)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        synthetic = bench_synthetic(tmp, n_syn, args.concurrency)
        kill = bench_kill_resume(tmp, n_kill)
        stac = bench_stac(tmp, n_stac, args.concurrency + 1)
    result = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "platform": platform.platform()},
              "synthetic": synthetic, "kill_resume": kill, "stac": stac}
    RESULTS.mkdir(exist_ok=True)
    name = "batch_quick.json" if args.quick else "batch.json"
    (RESULTS / name).write_text(json.dumps(result, indent=1))
    s, k, c = synthetic, kill, stac
    print(f"{'case':<34}{'AOIs':>6}{'seconds':>10}{'AOIs/min':>10}{'tiles':>8}  states")
    print(f"{'synthetic, tiles only':<34}{s['aois']:>6}{s['seconds']:>10}{s['aois_per_min']:>10}"
          f"{s['tiles']:>8}  {s['states']}")
    print(f"{'stac loopback, faults':<34}{c['aois']:>6}{c['seconds']:>10}{c['aois_per_min']:>10}"
          f"{c['tiles']:>8}  {c['states']}")
    print(f"stac bytes per done AOI {c['bytes_per_done_aoi'] / 1e3:.1f} kB; sent / AOI windows "
          f"{c['sent_over_windows']}; per AOI / whole scene {c['per_aoi_over_whole_scene']:.2%} "
          f"(whole scene {c['whole_scene_bytes'] / 1e6:.1f} MB); {c['faults_injected']} faults injected; "
          f"ledger per-AOI bytes sum / server bytes "
          f"{c['ledger_bytes_done_aois'] / max(c['bytes_sent_scene_files'], 1):.2f} (concurrent AOIs "
          "reading one file each count the other's bytes)")
    print(f"resume: no-op on {s['aois']} finished AOIs {s['noop_resume_seconds']} s (ran "
          f"{s['noop_resume_ran']}); killed after {k['done_at_kill']}/{k['aois']} done, resume "
          f"{k['resume_seconds']} s for {k['resumed_ran']} AOIs, finished AOIs redone: "
          f"{k['finished_aois_redone']}")
    tr = s["training"]
    print(f"training on tiles: {tr['tiles_train']} train / {tr['tiles_val']} val tiles, val MSE "
          f"{tr['val_loss']:.3f} vs mean-predictor {tr['val_baseline_loss']:.3f}")
    print(f"wrote {RESULTS / name}")


if __name__ == "__main__":
    main()
