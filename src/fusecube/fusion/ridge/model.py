"""Closed-form ridge fusion: S1 backscatter → NDVI, learned on a scene's own observations.

A cheap alternative to the neural fusion model (:mod:`fusecube.fusion.neural.train`): two linear
models fitted in closed form (ridge regression) on the scene being gap-filled, trained
self-supervised as the neural model is, from observed values only:

1. radar NDVI: observed NDVI regressed on backscatter features (:func:`~fusecube.fusion.
   ridge_features.radar_features`) at the observed dates;
2. blend: observations hidden with the cloud mask of another pixel of the scene (so the
   simulated gaps have the scene's real lengths and seasons), and the hidden values regressed
   on the radar NDVI and the pixel's remaining observations
   (:func:`~fusecube.fusion.ridge.features.blend_features`).

Fitting and gap-filling a 128 x 128 x 62 scene takes a fraction of a second on one thread.
A value under a cloud is never seen: it has no NDVI to learn from.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import xarray as xr

from fusecube.cube import CF_ATTRS, DIMS, NDVI, NDVI_FUSED, TIME, VH, VV
from fusecube.errors import CubeSchemaError
from fusecube.fusion.neural.features import (
    box_mean,
    calendar_features,
    screen_zero_periods,
)
from fusecube.fusion.ridge.features import (
    BackscatterTable,
    FeatureSet,
    radar_design,
)
from fusecube.grid.periods import to_days
from fusecube.kernels.ridge import (
    blend_rows,
    blend_samples,
    box_filter,
    radar_grid,
    standardise,
)
from fusecube.kernels.whittaker import linear_fill
from fusecube.units import to_db

logger = logging.getLogger(__name__)

BLEND_WIDTH = 11
"""Columns of the blend stage's design (``blend_features`` order)."""
MIN_TRAINING_VALUES = 200
"""Fewer observed (or simulated hidden) values than this cannot fit a stage: an error."""


@dataclass(frozen=True)
class RidgeConfig:
    """Options of :class:`RidgeFusion`.

    Attributes:
        window: Box-filter edge (pixels) of the backscatter (a multi-look against speckle).
        bins: Bins per axis of the (VV, VH) lookup table.
        lag_reach: The radar features enter at every date offset ``-lag_reach..lag_reach``.
        alpha: Ridge penalty on standardised features.
        radar_samples: Observed values sampled (with replacement) to fit the radar stage.
        blend_pixels: Pixels whose observations are hidden (another pixel's clouds) to fit
            the blend stage.
        date_span: Each of those pixels also loses a run of 1..``date_span`` whole dates,
            so the blend learns gaps that every pixel shares (composites, where no other
            pixel's clouds differ from its own); 0 hides another pixel's clouds only.
        seed: Seed of the samples and of the cloud-mask donors.
    """

    window: int = 5
    bins: int = 24
    lag_reach: int = 3
    alpha: float = 1.0
    radar_samples: int = 30_000
    blend_pixels: int = 2_000
    date_span: int = 3
    seed: int = 0


@dataclass
class LinearStage:
    """Ridge regression on standardised features.

    Attributes:
        alpha: Ridge penalty.
        coef_: Fitted weights of the raw features ``(F,)``.
        intercept_: Fitted constant.
    """

    alpha: float = 1.0
    coef_: np.ndarray = field(default_factory=lambda: np.zeros(0))
    intercept_: float = 0.0

    def fit(self, design: np.ndarray, target: np.ndarray) -> LinearStage:
        """Fit on ``(S, F)`` features and ``(S,)`` targets."""
        design = np.ascontiguousarray(design, np.float64)
        z = np.empty_like(design)
        mean, std = np.empty(design.shape[1]), np.empty(design.shape[1])
        standardise(design, z, mean, std)  # numpy's mean and std, one compiled pass
        gram = z.T @ z + self.alpha * np.eye(z.shape[1])
        weights = np.linalg.solve(gram, z.T @ (target - target.mean()))
        self.coef_ = weights / std
        self.intercept_ = float(target.mean() - self.coef_ @ mean)
        return self

    def predict(self, features: FeatureSet, shape: tuple[int, int]) -> np.ndarray:
        """``(N, T)`` float32 prediction at every sample of ``features``."""
        return features.combine(self.coef_, self.intercept_, shape)


def _box_db(linear: np.ndarray, window: int) -> np.ndarray:
    """Box-filtered backscatter in dB, ``(T, Y, X)`` float32.

    Gap-free radar (the usual case) takes one plain box filter (compiled, the values of
    ``scipy.ndimage.uniform_filter``); radar with NaN takes the NaN-aware
    :func:`~fusecube.fusion.neural.features.box_mean` (two filters).
    """
    linear = np.ascontiguousarray(linear, np.float32)
    if window > 1 and np.isfinite(linear).all():
        smoothed = np.empty_like(linear)
        box_filter(linear, window, smoothed)
        return to_db(smoothed, out=smoothed)  # in place: no fresh scene-sized arrays
    return to_db(box_mean(linear, window))


def _radar_gaps_bridged(grid: np.ndarray, times_days: np.ndarray) -> np.ndarray:
    """``(T, N)`` backscatter (dB) with dates without S1 interpolated in time, per pixel.

    A period without any acquisition (S1 on its own dates, an orbit gap) would otherwise put
    NaN into every radar feature that reaches it (the features span several dates) and so
    into the fitted weights. A pixel with no radar at all stays NaN. Gap-free radar (the
    usual case) is returned as is.
    """
    if np.isfinite(grid).all():
        return grid
    return np.ascontiguousarray(linear_fill(np.ascontiguousarray(grid.T), times_days).T,
                                dtype=np.float32)


def _as_series(grid: np.ndarray) -> np.ndarray:
    """``(T, Y, X)`` → ``(N, T)`` float32, C-contiguous."""
    t = grid.shape[0]
    return np.ascontiguousarray(grid.reshape(t, -1).T, dtype=np.float32)


def _as_grid(grid: np.ndarray) -> np.ndarray:
    """``(T, Y, X)`` → ``(T, N)`` float32, C-contiguous (a view when it already is)."""
    return np.ascontiguousarray(grid.reshape(grid.shape[0], -1), dtype=np.float32)


class RidgeFusion:
    """Gap-fill NDVI from S1 VV/VH with two closed-form ridge stages (module docstring).

    scikit-learn manners: options in ``__init__``, learning in :meth:`fit`, fitted state ends
    in ``_``; :meth:`fit_predict` shares the backscatter preparation.
    """

    def __init__(self, config: RidgeConfig | None = None) -> None:
        self.config = config or RidgeConfig()
        self.table_ = BackscatterTable(bins=self.config.bins)
        self.radar_stage_ = LinearStage(self.config.alpha)
        self.blend_stage_ = LinearStage(self.config.alpha)

    def _backscatter(self, vv: np.ndarray, vh: np.ndarray, ndvi: np.ndarray,
                     times_days: np.ndarray):
        if vv.ndim != 3 or vv.shape != vh.shape or vv.shape != ndvi.shape:
            raise CubeSchemaError(
                f"RidgeFusion needs vv, vh and ndvi as (time, y, x) grids of one shape; got "
                f"{vv.shape}, {vh.shape} and {ndvi.shape}.")
        # the radar stays (T, N), the layout the radar stage reads; NDVI goes pixel-major
        w = self.config.window
        grids = [_as_grid(_box_db(band, w)) for band in (vv, vh)]
        return (*(_radar_gaps_bridged(g, times_days) for g in grids), _as_series(ndvi))

    def _radar_ndvi(self, vv_grid, vh_grid, times_days) -> np.ndarray:
        out = np.empty(vv_grid.shape[::-1], np.float32)
        radar_grid(vv_grid, vh_grid, self.table_.edges_, self.table_.bins, self.table_.table_,
                   calendar_features(times_days).astype(np.float64), self.radar_stage_.coef_,
                   self.radar_stage_.intercept_, self.config.lag_reach, out)
        return out

    def _fit(self, vv_grid, vh_grid, ndvi, times_days) -> np.ndarray:
        cfg = self.config
        rng = np.random.default_rng(cfg.seed)
        observed = np.isfinite(ndvi)
        if not (np.isfinite(vv_grid).all() and np.isfinite(vh_grid).all()):
            observed &= (np.isfinite(vv_grid) & np.isfinite(vh_grid)).T
        if observed.sum() < MIN_TRAINING_VALUES:
            raise CubeSchemaError(
                f"RidgeFusion needs at least {MIN_TRAINING_VALUES} observed NDVI values with "
                f"radar to learn from; the scene has {int(observed.sum())}. Use a larger area "
                "or a baseline gap-fill (linear, whittaker).")
        flat = np.flatnonzero(observed)
        # drawn with replacement: a repeat only reweighs a sample, and drawing without
        # replacement permutes every observed value of the scene first
        draw = np.sort(flat[rng.integers(0, flat.size, cfg.radar_samples)])  # sorted: cache-friendly
        rows, cols = np.divmod(draw, ndvi.shape[1])
        target = ndvi[rows, cols].astype(np.float64)
        self.table_.fit(vv_grid[cols, rows], vh_grid[cols, rows], target)
        self.radar_stage_.fit(radar_design(vv_grid, vh_grid, self.table_, times_days,
                                           cfg.lag_reach, rows, cols), target)
        radar_ndvi = self._radar_ndvi(vv_grid, vh_grid, times_days)
        # blend stage: hide observations under another pixel's clouds, learn to predict them
        has_obs = np.flatnonzero(np.isfinite(ndvi).any(axis=1))
        pixels = np.sort(rng.choice(has_obs, min(cfg.blend_pixels, has_obs.size), replace=False))
        donors = rng.integers(0, ndvi.shape[0], pixels.size)
        keep = np.isfinite(ndvi[donors])
        if cfg.date_span > 0:  # and a run of whole dates, the gaps composites have
            n_t = ndvi.shape[1]
            start = rng.integers(0, n_t, pixels.size)[:, None]
            length = rng.integers(1, cfg.date_span + 1, pixels.size)[:, None]
            dates = np.arange(n_t)[None]
            keep &= ~((dates >= start) & (dates < start + length))
        design = np.empty((pixels.size * ndvi.shape[1], BLEND_WIDTH))
        target = np.empty(pixels.size * ndvi.shape[1])
        hidden = blend_samples(ndvi, radar_ndvi, pixels, keep,
                               np.asarray(times_days, np.float64), design, target)
        if hidden < MIN_TRAINING_VALUES:
            raise CubeSchemaError(
                f"RidgeFusion could hide only {hidden} of the {int(observed.sum())} observed "
                f"NDVI values of {has_obs.size} observed pixels to learn the blend from (fewer "
                f"than {MIN_TRAINING_VALUES}: too few observed pixels in this area); use a "
                "larger area or a baseline gap-fill (linear, whittaker).")
        self.blend_stage_.fit(design[:hidden], target[:hidden])
        return radar_ndvi

    def _predict(self, ndvi, radar_ndvi, times_days) -> np.ndarray:
        out = np.empty(ndvi.shape, np.float32)
        blend_rows(np.ascontiguousarray(ndvi, np.float32), np.ascontiguousarray(radar_ndvi),
                   np.asarray(times_days, np.float64), self.blend_stage_.coef_,
                   self.blend_stage_.intercept_, out)
        return out

    def fit(self, vv: np.ndarray, vh: np.ndarray, ndvi: np.ndarray,
            times_days: np.ndarray) -> RidgeFusion:
        """Learn both stages from a scene's observed NDVI.

        Args:
            vv: ``(T, Y, X)`` linear sigma0 VV.
            vh: ``(T, Y, X)`` linear sigma0 VH.
            ndvi: ``(T, Y, X)`` NDVI, NaN where not observed.
            times_days: ``(T,)`` sample times in days.

        Returns:
            ``self``.

        Raises:
            CubeSchemaError: Shapes disagree, or too few observations to learn from.
        """
        times_days = np.asarray(times_days, np.float64)
        self._fit(*self._backscatter(vv, vh, ndvi, times_days), times_days)
        return self

    def predict(self, vv: np.ndarray, vh: np.ndarray, ndvi: np.ndarray,
                times_days: np.ndarray) -> np.ndarray:
        """Gap-filled NDVI ``(N, T)`` float32 (``N = Y * X`` row-major): observations kept."""
        times_days = np.asarray(times_days, np.float64)
        vv_grid, vh_grid, series = self._backscatter(vv, vh, ndvi, times_days)
        return self._predict(series, self._radar_ndvi(vv_grid, vh_grid, times_days), times_days)

    def fit_predict(self, vv: np.ndarray, vh: np.ndarray, ndvi: np.ndarray,
                    times_days: np.ndarray) -> np.ndarray:
        """:meth:`fit` then :meth:`predict` on the same scene, preparing the radar once."""
        times_days = np.asarray(times_days, np.float64)
        vv_grid, vh_grid, series = self._backscatter(vv, vh, ndvi, times_days)
        radar_ndvi = self._fit(vv_grid, vh_grid, series, times_days)
        return self._predict(series, radar_ndvi, times_days)


def fuse_ridge(block: xr.Dataset, *, config: RidgeConfig | None = None) -> xr.Dataset:
    """Add ``ndvi_fused`` to a cube block: :class:`RidgeFusion` fitted on the block and filling it.

    A block with too few observations to learn from (a cloudy edge block) is gap-filled by
    linear interpolation instead, logged as a warning and recorded in the variable's
    ``gapfill_method`` attribute.

    Args:
        block: In-memory cube block ``(time, y, x)`` with ``vv``, ``vh`` and ``ndvi``.
        config: Ridge options (default :class:`RidgeConfig`).

    Returns:
        The block with ``ndvi_fused`` added (observations kept, zero periods screened).

    Raises:
        CubeSchemaError: The block lacks ``vv``, ``vh`` or ``ndvi``.
    """
    missing = [n for n in (VV, VH, NDVI) if n not in block]
    if missing:
        raise CubeSchemaError(f"Ridge fusion needs variables {missing} in the cube; it has "
                              f"{sorted(block.data_vars)}. Add the Sentinel-1 VV/VH bands.")
    vv, vh, ndvi = (np.asarray(block[n].transpose(*DIMS).values, np.float32) for n in (VV, VH, NDVI))
    t, ny, nx = ndvi.shape
    screened = screen_zero_periods(ndvi.reshape(t, -1).T)
    days = to_days(block[TIME].values)
    try:
        filled = RidgeFusion(config).fit_predict(vv, vh, screened.T.reshape(t, ny, nx), days)
        method = "ridge"
    except CubeSchemaError as err:  # too few observations in this block: interpolate
        logger.warning("ridge fusion fell back to linear interpolation: %s", err)
        filled = np.where(np.isfinite(screened), screened, linear_fill(screened, days))
        method = "linear (ridge fusion: too few observations in the block)"
    out = block.copy()
    out[NDVI_FUSED] = (DIMS, filled.T.reshape(t, ny, nx).astype(np.float32),
                       {**CF_ATTRS[NDVI_FUSED], "gapfill_method": method})
    return out
