"""Hash every output array of ``fusecube demo --size 96x96`` for each gap-fill method.

Used to show that a refactor leaves results bit-identical: run it before and after and
compare. ``--compare OLD.json`` exits 1 and names each array whose bytes changed.

    python benchmarks/demo_hashes.py --out benchmarks/results/demo_hashes.json
    python benchmarks/demo_hashes.py --compare benchmarks/results/demo_hashes.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import xarray as xr

METHODS = ("linear", "ridge", "fusion")


def _digest(values: np.ndarray) -> str:
    values = np.ascontiguousarray(values)
    return hashlib.sha256(values.dtype.str.encode() + str(values.shape).encode()
                          + values.tobytes()).hexdigest()[:20]


def array_hashes(run_dir: Path) -> dict[str, str]:
    """``{"result.zarr/ndvi_smooth": sha, "phenology.nc/sos_doy": sha, "cogs/x.tif": sha}``."""
    hashes: dict[str, str] = {}
    with xr.open_zarr(run_dir / "result.zarr", consolidated=False) as ds:
        for name in sorted(ds.variables):
            hashes[f"result.zarr/{name}"] = _digest(ds[name].values)
    with xr.open_dataset(run_dir / "phenology.nc", engine="h5netcdf") as ds:
        for name in sorted(ds.variables):
            hashes[f"phenology.nc/{name}"] = _digest(ds[name].values)
    import rasterio

    for tif in sorted((run_dir / "cogs").glob("*.tif")):
        with rasterio.open(tif) as src:
            hashes[f"cogs/{tif.name}"] = _digest(src.read())
    return hashes


def run_demo(method: str, out: Path, size: str) -> dict[str, str]:
    """Run the demo with ``method`` into ``out`` and hash its arrays."""
    env_ledger = out.parent / f"{method}-ledger.sqlite"
    cmd = [sys.executable, "-m", "fusecube", "demo", "--size", size, "--gapfill", method,
           "--out", str(out), "--ledger", str(env_ledger)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return array_hashes(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/demo_hashes.json"))
    parser.add_argument("--compare", type=Path, help="Earlier hashes to compare against.")
    parser.add_argument("--size", default="96x96")
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fusecube-hashes-") as tmp:
        hashes = {m: run_demo(m, Path(tmp) / m, args.size) for m in args.methods}
    if args.compare is None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(hashes, indent=1, sort_keys=True))
        print(f"{sum(len(h) for h in hashes.values())} arrays hashed -> {args.out}")
        return 0
    old = json.loads(args.compare.read_text())
    changed = 0
    print(f"{'method':8} {'arrays':>6} {'identical':>9}  changed")
    for method, new in hashes.items():
        before = old.get(method, {})
        diff = sorted(k for k in set(before) | set(new) if before.get(k) != new.get(k))
        changed += len(diff)
        print(f"{method:8} {len(new):>6} {len(new) - len(diff):>9}  {', '.join(diff) or '-'}")
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main())
