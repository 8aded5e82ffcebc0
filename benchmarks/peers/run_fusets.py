"""Peer runner: FuseTS 2.0.1 whittaker + phenology. Runs in .venv-peers-fusets (numpy 1.23.5).

Reads ``<work>/input.npz``; writes ``<work>/fusets.npz`` (per input: smoothed curves and the
raw FuseTS season metrics, day-of-year times) and ``<work>/fusets.json`` (timings or the
reason it was skipped). FuseTS reports one set of metrics for the whole series.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

LAMBDA = 10000.0  # FuseTS default (its whittaker works on a daily grid)
REPEAT = int(os.environ.get("PEERS_REPEAT", "3"))


def main(work: Path) -> None:
    report: dict = {"tool": "FuseTS"}
    try:
        import fusets
        import xarray as xr
        from fusets.analytics import phenology
        report["version"] = getattr(fusets, "__version__", "2.0.1")
    except Exception as exc:  # any import failure means: skip this peer
        report["skipped"] = f"FuseTS cannot be imported here: {exc!r}"
        (work / "fusets.json").write_text(json.dumps(report, indent=2))
        return
    warnings.filterwarnings("ignore")
    data = np.load(work / "input.npz")
    times = data["dates"].astype("datetime64[ns]")
    out = {}
    for kind in ("cloudy", "fused"):
        values = data[kind]
        n, n_t = values.shape
        da = xr.DataArray(values.T.reshape(n_t, 1, n).astype(np.float32), dims=("t", "y", "x"),
                          coords={"t": times})
        smooth_s = pheno_s = np.inf
        for _ in range(REPEAT):  # best of REPEAT: the machine is shared
            start = time.perf_counter()
            smoothed = fusets.whittaker(da, smoothing_lambda=LAMBDA, time_dimension="t")
            smooth_s = min(smooth_s, time.perf_counter() - start)
            start = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):  # FuseTS prints progress lines
                metrics = phenology(smoothed.rename(t="time"))
            pheno_s = min(pheno_s, time.perf_counter() - start)
        out[f"{kind}__smoothed"] = np.asarray(smoothed.values).reshape(n_t, n).T
        for name in ("sos_times", "pos_times", "eos_times", "pos_values", "los_values"):
            out[f"{kind}__{name}"] = np.asarray(metrics[name].values, dtype=np.float64).reshape(-1)
        report[kind] = {"pixels": n, "smooth_s": smooth_s, "pheno_s": pheno_s, "repeat": REPEAT}
    np.savez_compressed(work / "fusets.npz", **out)
    (work / "fusets.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
