"""Peer runner: FuseTS 2.0.1 MOGPR (multi-output GP, GPy). Runs in .venv-peers-fusets.

Reads ``<work>/fusion_input.npz``; writes ``<work>/mogpr.npz`` (``<set>__ndvi``: reconstructed
NDVI at every input date) and ``<work>/mogpr.json`` (seconds per data set, or why skipped).

Each series (a row: one pixel, or one hiding case of the real field) is fused on its own, as
``fusets.mogpr.mogpr`` does per pixel: NDVI and RVI as the two outputs of a Matern-3/2 linear
coregionalisation model, hyper-parameters optimised per series (``nt=1``). We call the function
it calls per pixel, ``fusets.mogpr.mogpr_1D``, with the output dates set to the input dates
(``mogpr`` itself predicts on a fixed 5-day grid, which would need interpolation to the hidden
dates); the fit is the same.

MOGPR starts its kernel length scale at 1 (time unit: days). On the 12-day composites of the
synthetic scene that start often leaves the fit in a poor optimum (a length scale of a day or
two: the prediction falls back to the series mean inside gaps), so the synthetic set is also
run with time counted in composite periods (``synth_periods``), which gives MOGPR the benefit
of the doubt; both are reported.
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

ORDINAL_1970 = 719163  # date(1970, 1, 1).toordinal(): MOGPR works in proleptic ordinals
MAX_SERIES = int(os.environ.get("FUSION_MOGPR_MAX", "0"))  # 0 = all (a cap for quick runs)


def main(work: Path) -> None:
    report: dict = {"tool": "MOGPR"}
    try:
        import fusets
        import GPy
        from fusets.mogpr import mogpr_1D
        report["version"] = f"FuseTS {getattr(fusets, '__version__', '2.0.1')}, GPy {GPy.__version__}"
    except Exception as exc:  # any import failure means: skip this peer
        report["skipped"] = f"FuseTS MOGPR cannot be imported here: {exc!r}"
        (work / "mogpr.json").write_text(json.dumps(report, indent=2))
        return
    warnings.filterwarnings("ignore")
    data = np.load(work / "fusion_input.npz")
    out = {}
    runs = {"real": ("real", 1.0), "synth": ("synth", 1.0), "synth_periods": ("synth", None)}
    for name, (key, unit) in runs.items():
        if f"{key}__ndvi" not in data:
            continue
        ndvi, rvi = data[f"{key}__ndvi"], data[f"{key}__rvi"]
        if MAX_SERIES:
            ndvi, rvi = ndvi[:MAX_SERIES], rvi[:MAX_SERIES]
        days = data[f"{key}__days"]
        unit = unit or float(np.median(np.diff(days)))  # one composite period
        dates = (days + ORDINAL_1970) / unit
        fused = np.full(ndvi.shape, np.nan)
        failed = 0
        start = time.perf_counter()
        for row in range(ndvi.shape[0]):  # MOGPR fits one GP per pixel: there is no batch form
            with contextlib.redirect_stdout(io.StringIO()):
                mean, _std, ok, _model = mogpr_1D([ndvi[row], rvi[row]], [dates, dates], 0,
                                                  output_timevec=dates, nt=1)
            failed += not ok
            fused[row] = mean[0]
        seconds = time.perf_counter() - start
        out[f"{name}__ndvi"] = fused
        report[name] = {"series": int(ndvi.shape[0]), "seconds": seconds, "failed_fits": failed,
                        "time_unit_days": unit}
    np.savez_compressed(work / "mogpr.npz", **out)
    (work / "mogpr.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
