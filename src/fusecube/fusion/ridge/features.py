"""Features of the closed-form ridge fusion (pure numpy, vectorised over pixels).

Two stages, each a linear model on a handful of ``(N, T)`` feature series:

1. **Radar NDVI** (:func:`radar_features`): a 2-D lookup table of mean observed NDVI per
   (VV dB, VH dB) bin of the box-filtered backscatter (:class:`BackscatterTable`: the
   water-cloud relation is far from linear in dB), the table value and the dB values at
   neighbouring dates (lags), day of year, and day of year times the table value.
2. **Blend with the pixel's own observations** (:func:`blend_features`): the radar NDVI, a
   linear interpolation of the observed NDVI and of the radar NDVI's residual at the
   observations, the distance to the nearest observation and its products with those, and the
   pixel's mean observed NDVI: how far to trust the interpolation is learned, not set.

A stage's features are a :class:`FeatureSet` of ``(N, T)`` series: a model gathers its
training rows from them or combines them into a prediction without ever holding the whole
``(N, T, F)`` design matrix.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from fusecube.fusion.neural.features import GAP_DAYS_SCALE, calendar_features
from fusecube.kernels.ridge import radar_samples


@dataclass(frozen=True)
class FeatureSet:
    """Feature series of one stage, each ``(N, T)`` or broadcasting to it.

    ``lagged`` ones enter at every date offset in ``-reach..reach`` (the edge dates repeated
    beyond the ends), ``plain`` ones as they are. Columns of the design matrix are, in order:
    each lagged series at each offset (ascending), then each plain series.
    """

    lagged: tuple[np.ndarray, ...]
    plain: tuple[np.ndarray, ...]
    reach: int = 0

    @property
    def width(self) -> int:
        """Number of design-matrix columns."""
        return len(self.lagged) * (2 * self.reach + 1) + len(self.plain)

    def design(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """``(S, F)`` float64 design matrix at the samples ``(rows, cols)``."""
        n_t = self.lagged[0].shape[1] if self.lagged else self.plain[0].shape[-1]
        columns = [series[rows, np.clip(cols + lag, 0, n_t - 1)]
                   for series in self.lagged for lag in range(-self.reach, self.reach + 1)]
        columns += [series[0, cols] if series.shape[0] == 1 else series[rows, cols]
                    for series in self.plain]  # a (1, T) series is the same for every row
        return np.stack(columns, axis=1).astype(np.float64)

    def combine(self, coef: np.ndarray, intercept: float, shape: tuple[int, int]) -> np.ndarray:
        """``intercept + design · coef`` at every sample, ``(N, T)`` float32.

        A lagged series' weights are one time filter (``correlate1d``, edges held), so the
        lags cost one pass over the data, not one per lag.
        """
        out = np.full(shape, intercept, np.float32)
        taps = 2 * self.reach + 1
        for k, series in enumerate(self.lagged):
            weights = coef[k * taps : (k + 1) * taps].astype(np.float32)
            out += ndimage.correlate1d(series, weights, axis=1, mode="nearest")
        for weight, series in zip(coef[len(self.lagged) * taps :], self.plain, strict=True):
            out += np.float32(weight) * series
        return out


@dataclass
class BackscatterTable:
    """Mean observed NDVI per (VV dB, VH dB) bin, shrunk towards the overall mean.

    Attributes:
        bins: Bins per axis.
        prior: Pseudo-count of the shrinkage towards the overall mean (sparse bins).
        edges_: Fitted ``(low_vv, high_vv, low_vh, high_vh)`` (0.5 and 99.5 percentiles).
        table_: Fitted ``(bins * bins,)`` NDVI per bin.
    """

    bins: int = 24
    prior: float = 20.0
    edges_: np.ndarray = field(default_factory=lambda: np.zeros(4))
    table_: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def _index(self, vv_db: np.ndarray, vh_db: np.ndarray) -> np.ndarray:
        low_v, high_v, low_h, high_h = self.edges_
        iv = np.clip(((vv_db - low_v) * (self.bins / (high_v - low_v))).astype(np.int32),
                     0, self.bins - 1)
        ih = np.clip(((vh_db - low_h) * (self.bins / (high_h - low_h))).astype(np.int32),
                     0, self.bins - 1)
        return iv * self.bins + ih

    def fit(self, vv_db: np.ndarray, vh_db: np.ndarray, ndvi: np.ndarray) -> BackscatterTable:
        """Fit on matching 1-D samples (observed NDVI and the backscatter at its dates)."""
        edges = np.concatenate([np.percentile(vv_db, [0.5, 99.5]), np.percentile(vh_db, [0.5, 99.5])])
        edges[1] = max(edges[1], edges[0] + 1e-3)  # a constant band still gets a width
        edges[3] = max(edges[3], edges[2] + 1e-3)
        self.edges_ = edges
        index = self._index(vv_db, vh_db)
        total = np.bincount(index, weights=ndvi, minlength=self.bins**2)
        count = np.bincount(index, minlength=self.bins**2)
        self.table_ = (total + self.prior * ndvi.mean()) / (count + self.prior)
        return self

    def predict(self, vv_db: np.ndarray, vh_db: np.ndarray) -> np.ndarray:
        """NDVI of the bin of each sample, same shape, float32 (NaN backscatter: bin 0)."""
        if not (np.isfinite(vv_db).all() and np.isfinite(vh_db).all()):
            vv_db = np.nan_to_num(vv_db, nan=self.edges_[0])
            vh_db = np.nan_to_num(vh_db, nan=self.edges_[2])
        return self.table_[self._index(vv_db, vh_db)].astype(np.float32)


def radar_features(vv_db: np.ndarray, vh_db: np.ndarray, table_ndvi: np.ndarray,
                   times_days: np.ndarray, reach: int) -> FeatureSet:
    """Stage-1 features of ``(N, T)`` box-filtered backscatter (module docstring)."""
    calendar = calendar_features(times_days)
    return FeatureSet(lagged=(table_ndvi, vv_db, vh_db, vh_db - vv_db),
                      plain=(calendar[0][None], calendar[1][None],
                             table_ndvi * calendar[0], table_ndvi * calendar[1]),
                      reach=reach)


def radar_design(vv_grid: np.ndarray, vh_grid: np.ndarray, table: BackscatterTable,
                 times_days: np.ndarray, reach: int, rows: np.ndarray,
                 cols: np.ndarray) -> np.ndarray:
    """``radar_features(...).design(rows, cols)`` without the scene-wide table lookup.

    Takes the backscatter as ``(T, N)`` grids (``vv_grid[t, n]`` is ``vv_db[n, t]``) and looks
    up only the sampled values (and their lagged dates), in one compiled pass.
    """
    width = 4 * (2 * reach + 1) + 4
    design = np.empty((rows.size, width))
    radar_samples(np.ascontiguousarray(vv_grid, np.float32),
                  np.ascontiguousarray(vh_grid, np.float32), table.edges_, table.bins,
                  table.table_, calendar_features(times_days), reach,
                  np.asarray(rows, np.int64), np.asarray(cols, np.int64), design)
    return design


@dataclass(frozen=True)
class BlendInputs:
    """What stage 2 sees of each pixel: observed NDVI (NaN = missing) and the radar NDVI."""

    ndvi: np.ndarray
    radar_ndvi: np.ndarray


def interpolation(ndvi: np.ndarray, times_days: np.ndarray):
    """Linear interpolation through the gaps of ``(N, T)`` series, ready for other series.

    Returns ``(interpolate, gap)``: ``interpolate(x)`` interpolates any ``(N, T)`` series
    from its values at the dates where ``ndvi`` is observed (ends held at the nearest
    observation, 0 for a pixel without any), and ``gap`` is the distance in days to the
    nearest observation (``inf`` without any). Same values as
    :func:`fusecube.kernels.whittaker.linear_fill`, but the plan is made once for both series
    stage 2 interpolates.
    """
    times = np.asarray(times_days, np.float64)
    t = (times - times[0]).astype(np.float32)  # float32 offsets: half the memory traffic
    n_t = t.size
    valid = np.isfinite(ndvi)
    steps = np.arange(n_t, dtype=np.int32)
    prev = np.maximum.accumulate(np.where(valid, steps, -1), axis=1)
    nxt = np.minimum.accumulate(np.where(valid, steps, n_t)[:, ::-1], axis=1)[:, ::-1]
    has_prev, has_next = prev >= 0, nxt < n_t
    prev_c, next_c = np.where(has_prev, prev, nxt), np.where(has_next, nxt, prev)
    prev_c, next_c = np.clip(prev_c, 0, n_t - 1), np.clip(next_c, 0, n_t - 1)
    span = t[next_c] - t[prev_c]
    frac = np.where(span > 0, (t - t[prev_c]) / np.where(span > 0, span, 1.0), 0.0
                    ).astype(np.float32)
    gap = np.minimum(np.where(has_prev, t - t[prev_c], np.inf),
                     np.where(has_next, t[next_c] - t, np.inf)).astype(np.float32)
    none = ~(has_prev | has_next)

    def interpolate(series: np.ndarray) -> np.ndarray:
        low = np.take_along_axis(series, prev_c, axis=1)
        high = np.take_along_axis(series, next_c, axis=1)
        return np.where(none, 0.0, low + frac * (high - low)).astype(np.float32)

    return interpolate, gap


def blend_features(inputs: BlendInputs, times_days: np.ndarray) -> FeatureSet:
    """Stage-2 features of ``(N, T)`` series (module docstring)."""
    radar_ndvi = inputs.radar_ndvi
    valid = np.isfinite(inputs.ndvi)
    interpolate, gap_days = interpolation(inputs.ndvi, times_days)
    observed = np.where(valid, inputs.ndvi, 0.0).astype(np.float32)
    interp = interpolate(observed)
    residual = interpolate(observed - radar_ndvi)
    gap = np.minimum(gap_days / GAP_DAYS_SCALE, 2.0)
    count = valid.sum(axis=1, keepdims=True)
    mean = (observed.sum(axis=1, keepdims=True) / np.maximum(count, 1)).astype(np.float32)
    return FeatureSet(lagged=(), plain=(
        radar_ndvi, interp, residual, gap, gap * interp, gap * residual, gap * radar_ndvi,
        np.broadcast_to(mean, radar_ndvi.shape), mean * radar_ndvi, gap * gap,
        gap * gap * residual))
