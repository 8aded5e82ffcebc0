"""Peer runner: TIMESAT 4.4.1 and whittaker-eilers. Runs in .venv-peers-timesat (numpy >= 2).

TIMESAT is used for benchmarking only: its licence forbids shipping it with fusecube.
Reads ``<work>/input.npz``; writes ``<work>/timesat.npz`` / ``timesat.json`` and
``<work>/whittaker_eilers.npz`` / ``whittaker_eilers.json``. Each tool that cannot be
imported is skipped with its reason in its JSON.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

# TIMESAT settings: fitmethod 2 with smoothing 1000 (timesat-cli defaults), season start and
# end at 20 % of the seasonal amplitude (fusecube's default fractions), seapar 0 (allow two
# seasons a year, TIMESAT's most)
TS_FITMETHOD, TS_SMOOTH, TS_CUTOFF, TS_SEAPAR = 2, 1000.0, 0.2, 0.0
NODATA = -9999.0
REPEAT = int(os.environ.get("PEERS_REPEAT", "3"))
# HRVPP parameter order, 13 per season, 2 seasons per year
SOSD, LENGTH, EOSD, MAXD, MAXV = 0, 6, 3, 8, 9


def _full(value, dtype) -> np.ndarray:
    return np.full(255, value, dtype=dtype)


def _yyyydoy_to_days(value: np.ndarray) -> np.ndarray:
    """TIMESAT dates (YYYYDOY, fractional) → days since 1970-01-01; invalid → NaN."""
    v = np.asarray(value, dtype=np.float64)
    ok = np.isfinite(v) & (v > 1_000_000)
    year = np.where(ok, np.floor(v / 1000), 1970).astype(int)
    doy = v - year * 1000.0
    jan1 = (np.array([f"{y}-01-01" for y in year.ravel()], dtype="datetime64[D]")
            .astype(np.int64).reshape(year.shape))
    return np.where(ok & (doy >= 1), jan1 + doy - 1.0, np.nan)


def _tsfprocess(timesat, nyr, vi, qa, tv, n, cutoff):
    """One TIMESAT call: smoothing (fitmethod) and phenology for all pixels."""
    vpp, _, _, yfit, _, _, _ = timesat.tsfprocess(
        nyr, vi, qa, tv, np.ones((n, 1), np.int32), 1, _full(1, np.int32),
        np.arange(1, nyr * 365 + 1, dtype=np.int32), 366, np.array([0.0, 1.0]), 0,
        _full(TS_FITMETHOD, np.int32), _full(TS_SMOOTH, float), NODATA, 45, 0,
        _full(1, np.int32), _full(1.0, float), _full(1, np.int32), cutoff, _full(0.0, float),
        _full(0, np.int32), 1, _full(1, np.int32), _full(TS_SEAPAR, float),
        _full(1, np.int32), _full(0, np.int32), _full(0.5, float), 1)
    return vpp, yfit


def run_timesat(data, work: Path) -> None:
    report: dict = {"tool": "TIMESAT"}
    try:
        import timesat
        report["version"] = getattr(timesat, "__version__", "4.4.1")
    except Exception as exc:
        report["skipped"] = f"TIMESAT cannot be imported here: {exc!r}"
        (work / "timesat.json").write_text(json.dumps(report, indent=2))
        return
    dates = data["dates"].astype("datetime64[D]")
    years = dates.astype("datetime64[Y]").astype(int) + 1970
    first = int(years.min())
    nyr = int(years.max()) - first + 1
    doy = (dates - dates.astype("datetime64[Y]")).astype(int) + 1
    tv = (years * 1000 + doy).astype(np.int32)
    day_index = (years - first) * 365 + np.minimum(doy, 365) - 1  # TIMESAT's 365-day years
    out = {}
    for kind in ("cloudy", "fused"):
        values, weights = data[kind], data[f"{kind}_weight"]
        n, n_t = values.shape
        vi = np.asfortranarray(np.where(np.isfinite(values), values, -1.0).reshape(n, 1, n_t),
                               dtype=np.float32)
        qa = np.asfortranarray(np.where(np.isfinite(values), weights, 0.0).reshape(n, 1, n_t),
                               dtype=np.float32)
        cutoff = np.zeros((255, 2), order="F")
        cutoff[:] = TS_CUTOFF
        seconds = np.inf
        for _ in range(REPEAT):  # best of REPEAT: the machine is shared
            start = time.perf_counter()
            vpp, yfit = _tsfprocess(timesat, nyr, vi, qa, tv, n, cutoff)
            seconds = min(seconds, time.perf_counter() - start)
        seasons = np.asarray(vpp).reshape(n, nyr * 2, 13).astype(np.float64)
        valid = seasons[:, :, MAXD] > 1_000_000
        out[f"{kind}__smoothed"] = np.asarray(yfit).reshape(n, -1)[:, day_index]
        for name, col, is_date in (("sos", SOSD, True), ("pos", MAXD, True), ("eos", EOSD, True),
                                   ("peak_value", MAXV, False), ("length", LENGTH, False)):
            v = _yyyydoy_to_days(seasons[:, :, col]) if is_date else seasons[:, :, col]
            out[f"{kind}__{name}"] = np.where(valid, v, np.nan)
        # one call does smoothing and phenology: the time counts for both, as one figure
        report[kind] = {"pixels": n, "smooth_and_pheno_s": seconds, "repeat": REPEAT}
    np.savez_compressed(work / "timesat.npz", **out)
    report["settings"] = {"fitmethod": TS_FITMETHOD, "smooth": TS_SMOOTH, "cutoff": TS_CUTOFF,
                          "seapar": TS_SEAPAR}
    (work / "timesat.json").write_text(json.dumps(report, indent=2))


def run_whittaker_eilers(data, work: Path, lam: float) -> None:
    report: dict = {"tool": "whittaker-eilers"}
    try:
        from whittaker_eilers import WhittakerSmoother
    except Exception as exc:
        report["skipped"] = f"whittaker-eilers cannot be imported here: {exc!r}"
        (work / "whittaker_eilers.json").write_text(json.dumps(report, indent=2))
        return
    out = {}
    for kind in ("cloudy", "fused"):
        values, weights = data[kind], data[f"{kind}_weight"]
        n, n_t = values.shape
        y = np.where(np.isfinite(values), values, 0.0)
        w = np.where(np.isfinite(values), weights, 0.0)
        smoothed = np.empty((n, n_t))
        seconds = np.inf
        for _ in range(REPEAT):  # best of REPEAT: the machine is shared
            start = time.perf_counter()
            smoother = WhittakerSmoother(lmbda=lam, order=2, data_length=n_t)  # reused per pixel
            for i in range(n):  # its API is one series at a time
                smoother.update_weights(w[i].tolist())
                smoothed[i] = smoother.smooth(y[i].tolist())
            seconds = min(seconds, time.perf_counter() - start)
        report[kind] = {"pixels": n, "smooth_s": seconds, "repeat": REPEAT}
        out[f"{kind}__smoothed"] = smoothed
    report["lambda"] = lam
    np.savez_compressed(work / "whittaker_eilers.npz", **out)
    (work / "whittaker_eilers.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    work = Path(sys.argv[1])
    lam = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
    data = np.load(work / "input.npz")
    run_whittaker_eilers(data, work, lam)
    run_timesat(data, work)
