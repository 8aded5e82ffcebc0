"""Per-pixel feature series for the S1→NDVI fusion model (pure numpy, vectorised over pixels).

A pixel's input is a stack of channels over its whole time series, laid out ``(N, C, T)``:

- radar channels (normalised with statistics fitted on training data only): VV and VH in dB
  and linear, VH-VV in dB, RVI = 4·VH/(VV+VH) on **linear** values, and the same in dB after a
  small box filter over neighbouring pixels (a multi-look that tames speckle);
- day of year as sin/cos;
- the pixel's own optical history: observed NDVI (0 where missing), its validity mask and
  quality, a linear interpolation through the gaps and the distance (in days) to the
  nearest observation, so the network learns how far to trust the interpolation.

Radar and calendar channels do not change when optical values are hidden for training, so they
are built once (:func:`radar_features`); the optical channels are rebuilt for every training
batch (:func:`optical_features`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from fusecube.grid.periods import day_of_year
from fusecube.kernels.whittaker import linear_fill
from fusecube.units import to_db

#: Optional field-scale radar channels (box filter ``2 * window + 1``).
WIDE_FEATURES: tuple[str, ...] = ("vv_db_wide", "vh_db_wide", "rvi_wide")
#: Radar channels computed from linear sigma0 VV and VH.
RADAR_FEATURES: tuple[str, ...] = (
    "vv_db", "vh_db", "vh_vv_db", "vv_lin", "vh_lin", "rvi",
    "vv_db_local", "vh_db_local", "rvi_local",
)
#: Calendar channels (not normalised).
CALENDAR_FEATURES: tuple[str, ...] = ("doy_sin", "doy_cos")
#: Optical channels, rebuilt whenever observations are hidden (not normalised: NDVI keeps
#: its natural range).
OPTICAL_FEATURES: tuple[str, ...] = ("ndvi_obs", "ndvi_valid", "ndvi_quality", "ndvi_linear",
                                     "gap_days")
GAP_DAYS_SCALE = 100.0
"""``gap_days`` is days to the nearest observation divided by this (capped at 2)."""


def _db32(linear: np.ndarray) -> np.ndarray:
    """A float32 dB channel (:func:`fusecube.units.to_db`, computed in the input's precision)."""
    return to_db(linear).astype(np.float32, copy=False)


def rvi(vv: np.ndarray, vh: np.ndarray) -> np.ndarray:
    """Radar vegetation index 4·VH/(VV+VH) on **linear** sigma0 (0 bare/water .. ~1 dense)."""
    total = vv + vh
    return np.where(total > 0, 4.0 * vh / np.where(total > 0, total, 1.0), np.nan).astype(np.float32)


def box_mean(values: np.ndarray, window: int) -> np.ndarray:
    """NaN-aware mean over a ``window`` x ``window`` neighbourhood of each pixel, per time step.

    Args:
        values: ``(T, Y, X)`` array.
        window: Odd window edge in pixels; 1 returns the input.

    Returns:
        ``(T, Y, X)`` float32; edges use the pixels that exist (nearest-edge reflection).
    """
    if window <= 1:
        return values.astype(np.float32)
    ok = np.isfinite(values)
    size = (1, window, window)
    total = ndimage.uniform_filter(np.where(ok, values, 0.0).astype(np.float32), size, mode="nearest")
    count = ndimage.uniform_filter(ok.astype(np.float32), size, mode="nearest")
    return np.where(count > 0, total / np.maximum(count, 1e-6), np.nan).astype(np.float32)


def radar_features(radar: Mapping[str, np.ndarray], names: Sequence[str], *,
                   window: int = 5) -> np.ndarray:
    """Radar channels of every pixel of a grid.

    Args:
        radar: ``vv``/``vh`` linear sigma0 as ``(T, Y, X)``; any feature may also be given
            directly by its name (e.g. ``rvi`` for a field-mean series that has no VV/VH).
        names: Channels to build, from :data:`RADAR_FEATURES` or keys of ``radar``.
        window: Box-filter edge of the ``*_local`` channels; ``*_wide`` use ``2 * window + 1``.

    Returns:
        ``(N, C, T)`` float32 with ``N = Y * X`` (row-major), NaN where the radar is missing.
    """
    cache: dict[tuple[str, int], np.ndarray] = {}

    def local(name: str, size: int = window) -> np.ndarray:
        if (name, size) not in cache:
            cache[name, size] = box_mean(radar[name], size)
        return cache[name, size]

    wide = 2 * window + 1

    builders = {
        "vv_db": lambda: _db32(radar["vv"]),
        "vh_db": lambda: _db32(radar["vh"]),
        "vh_vv_db": lambda: _db32(radar["vh"]) - _db32(radar["vv"]),
        "vv_lin": lambda: radar["vv"],
        "vh_lin": lambda: radar["vh"],
        "rvi": lambda: rvi(radar["vv"], radar["vh"]),
        "vv_db_local": lambda: _db32(local("vv")),
        "vh_db_local": lambda: _db32(local("vh")),
        "rvi_local": lambda: rvi(local("vv"), local("vh")),
        "vv_db_wide": lambda: _db32(local("vv", wide)),
        "vh_db_wide": lambda: _db32(local("vh", wide)),
        "rvi_wide": lambda: rvi(local("vv", wide), local("vh", wide)),
    }
    channels = []
    for name in names:
        if name in radar:
            channels.append(np.asarray(radar[name], dtype=np.float32))
        elif name in builders:
            channels.append(builders[name]())
        else:
            raise KeyError(f"radar feature {name!r} needs inputs {sorted(radar)} cannot give")
    stack = np.stack(channels, axis=1)  # (T, C, Y, X)
    t, c = stack.shape[:2]
    return np.ascontiguousarray(stack.reshape(t, c, -1).transpose(2, 1, 0))


def calendar_features(times_days: np.ndarray) -> np.ndarray:
    """Day of year as ``(2, T)`` float32 sin/cos."""
    angle = 2 * np.pi * (day_of_year(times_days) - 1.0) / 365.25
    return np.stack([np.sin(angle), np.cos(angle)]).astype(np.float32)


def gap_days(valid: np.ndarray, times_days: np.ndarray) -> np.ndarray:
    """Days from each sample to the nearest valid observation of its pixel (0 where observed).

    Args:
        valid: ``(N, T)`` bool.
        times_days: ``(T,)`` sample times.

    Returns:
        ``(N, T)`` float32; ``inf`` for pixels with no observation at all.
    """
    t = np.asarray(times_days, dtype=np.float64)
    n, n_t = valid.shape
    since = np.empty((n, n_t), np.float64)
    last = np.full(n, -np.inf)
    for i in range(n_t):  # a loop over time steps, vectorised over pixels
        last = np.where(valid[:, i], t[i], last)
        since[:, i] = t[i] - last
    until = np.empty((n, n_t), np.float64)
    nxt = np.full(n, np.inf)
    for i in range(n_t - 1, -1, -1):
        nxt = np.where(valid[:, i], t[i], nxt)
        until[:, i] = nxt - t[i]
    return np.minimum(since, until).astype(np.float32)


def optical_features(ndvi: np.ndarray, quality: np.ndarray, times_days: np.ndarray) -> np.ndarray:
    """Optical channels ``(N, 5, T)`` of series with NaN for missing (see :data:`OPTICAL_FEATURES`).

    Pixels with no observation get 0 for the interpolation and the largest gap distance.
    """
    valid = np.isfinite(ndvi)
    obs = np.where(valid, ndvi, 0.0).astype(np.float32)
    qual = np.where(valid, np.clip(np.nan_to_num(quality, nan=1.0), 0, 1), 0.0).astype(np.float32)
    interp = np.nan_to_num(linear_fill(ndvi, times_days), nan=0.0)
    gaps = np.minimum(gap_days(valid, times_days) / GAP_DAYS_SCALE, 2.0)
    return np.stack([obs, valid.astype(np.float32), qual, interp, gaps], axis=1)


def screen_zero_periods(ndvi: np.ndarray) -> np.ndarray:
    """Set to NaN the time steps whose observed values are all exactly 0 (a broken composite).

    Args:
        ndvi: ``(N, T)`` series.

    Returns:
        A copy with those periods missing.
    """
    valid = np.isfinite(ndvi)
    n_valid = valid.sum(axis=0)
    all_zero = (n_valid > 1) & ((valid & (ndvi != 0)).sum(axis=0) == 0)
    out = ndvi.copy()
    out[:, all_zero] = np.nan
    return out


@dataclass
class Normalizer:
    """Per-channel mean and standard deviation of the radar channels, fitted on training data.

    Attributes:
        names: The channels, in order.
        mean_: Fitted means ``(C,)``.
        std_: Fitted standard deviations ``(C,)``.
    """

    names: tuple[str, ...]
    mean_: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    std_: np.ndarray = field(default_factory=lambda: np.ones(0, np.float32))

    def fit(self, features: np.ndarray) -> Normalizer:
        """Fit on ``(N, C, T)`` training features (NaN ignored)."""
        flat = features.transpose(1, 0, 2).reshape(features.shape[1], -1)
        self.mean_ = np.nan_to_num(np.nanmean(flat, axis=1)).astype(np.float32)
        std = np.nan_to_num(np.nanstd(flat, axis=1), nan=1.0)
        self.std_ = np.where(std > 1e-8, std, 1.0).astype(np.float32)
        return self

    def transform(self, features: np.ndarray) -> np.ndarray:
        """Standardise ``(N, C, T)`` in place-free fashion; missing radar becomes 0 (the mean)."""
        z = (features - self.mean_[None, :, None]) / self.std_[None, :, None]
        return np.nan_to_num(z, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)

    def to_dict(self) -> dict:
        """JSON-able state."""
        return {"names": list(self.names), "mean": self.mean_.tolist(), "std": self.std_.tolist()}

    @classmethod
    def from_dict(cls, state: Mapping) -> Normalizer:
        """Rebuild from :meth:`to_dict` output."""
        return cls(tuple(state["names"]), np.asarray(state["mean"], np.float32),
                   np.asarray(state["std"], np.float32))


def assemble(radar_z: np.ndarray, calendar: np.ndarray, optical: np.ndarray) -> np.ndarray:
    """Concatenate normalised radar ``(N, R, T)``, calendar ``(2, T)`` and optical ``(N, 5, T)``."""
    n = radar_z.shape[0]
    cal = np.broadcast_to(calendar[None], (n, *calendar.shape))
    return np.concatenate([radar_z, cal, optical], axis=1).astype(np.float32, copy=False)
