"""The validated gap-fill choice: every candidate scored on data it never saw, the best one used.

Before any block runs, :func:`choose_gapfill` cuts a few windows out of the screened cube,
hides observed NDVI the way real gaps fall — whole dates (every pixel of a composite shares
them) and cloud-like runs of dates per pixel — fills the hidden values with each candidate from
what is left, and scores the fills against the hidden observations. Scores carry bootstrap
intervals over spatial tiles, so neighbouring pixels do not count as independent evidence.

The rule (:mod:`fusecube.evaluate.choice`): a radar method (``ridge``, ``fusion``) is used only
when it beats the best optical baseline (``linear``, ``whittaker``) in at least ``confidence``
of the bootstrap resamples; a method that validates worse than the best baseline is never
used, even when asked for by name.
Where S1 follows NDVI (flooded rice) the radar methods win by a wide margin; where it does not
(grassland, most real monthly composites) the baseline is used and the run says so.

The neural model is scored by its own validation (spatial blocks with a buffer and held-out
dates, :mod:`fusecube.fusion.neural.validation`), which already reports the baselines on the
same hidden values; re-scoring it here on pixels it trained on would flatter it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import xarray as xr

from fusecube.cube import DIMS, NDVI, NDVI_FUSED, PADDY_MASK, TIME, VH, VV, X, Y
from fusecube.fusion.baselines import gap_lengths
from fusecube.fusion.baselines import gapfill as baseline_gapfill
from fusecube.fusion.ridge.model import RidgeConfig, fuse_ridge

BASELINES = ("linear", "whittaker")
"""Optical-only methods: what a user gets with one line of xarray (``interpolate_na``)."""
RADAR_METHODS = ("ridge", "fusion")
"""Methods that use S1: used only when they validate better than the best baseline."""
SCHEMES = ("dates", "spans")
#: Gap lengths (dates) up to which the Whittaker baseline is tried joining gaps linearly.
LINEAR_BELOW = (0, 1, 2, 3)
"""How values are hidden: whole dates, and cloud-like runs of dates per pixel."""


@dataclass(frozen=True)
class SelectionConfig:
    """How the candidates are validated."""

    window: int = 128
    """Edge (px) of each validation window."""
    windows: int = 4
    """Windows spread over the scene (fewer when it is small)."""
    holdout_dates: float = 0.15
    """Share of the observed dates hidden whole (at least one)."""
    span: int = 3
    """Longest run of dates hidden per pixel (cloud-like gaps)."""
    span_share: float = 0.5
    """Share of pixels that lose such a run."""
    repeats: int = 3
    """Independent hidings per window (other dates, other runs): less luck in the scores."""
    tile: int = 8
    """Edge (px) of the spatial tiles the bootstrap resamples."""
    resamples: int = 400
    """Bootstrap resamples for the intervals and the win share."""
    confidence: float = 0.8
    """Share of resamples in which a radar method must beat the best baseline."""
    seed: int = 0
    """Seed of the windows, the hidden values and the bootstrap."""
    radar_check: bool = True
    """Also score ridge with its radar shuffled between pixels (each pixel gets another
    pixel's VV/VH series): how much of ridge's gain S1 itself brings, rather than its model
    of the optical series. Costs one more ridge fit per hiding."""


@dataclass
class MethodScore:
    """One candidate's score on the hidden values."""

    method: str
    rmse: float
    """Root-mean-square error on all hidden values."""
    low: float | None
    """2.5 % bootstrap quantile of the RMSE (None without tiles to resample)."""
    high: float | None
    """97.5 % bootstrap quantile of the RMSE."""
    n: int
    """Hidden values scored."""
    by_scheme: dict[str, float] = field(default_factory=dict)
    """RMSE per hiding scheme (``dates``, ``spans``)."""
    by_stratum: dict[str, float] = field(default_factory=dict)
    """RMSE per stratum (``paddy``, ``other``) when the run has a mask."""
    win_share: float | None = None
    """Share of resamples in which it beats the best baseline (set by :func:`fusecube.evaluate.choice.decide`)."""
    wins: dict[str, float] = field(default_factory=dict)
    """Per other baseline, the share of resamples in which this method beats it."""
    seconds: float = 0.0
    note: str = ""
    params: dict = field(default_factory=dict)
    """Options validated with it (Whittaker: ``linear_below``, the gap length up to which
    gaps are joined linearly, and the RMSE of every length tried; ridge: the radar check,
    ``rmse_radar_shuffled``, ``radar_gain`` in % and ``radar_wins``, the share of resamples
    in which ridge beats itself with the radar shuffled between pixels)."""


# ----------------------------------------------------------------------------- hiding
def _window_starts(size: int, edge: int, count: int, rng: np.random.Generator) -> list[int]:
    """Up to ``count`` starts of non-overlapping windows of ``edge`` along an axis of ``size``."""
    fits = max(1, size // edge)
    offset = int(rng.integers(0, max(size - fits * edge, 0) + 1))
    picked = rng.choice(fits, size=min(count, fits), replace=False)
    return sorted(int(offset + edge * k) for k in picked)


def validation_windows(cube: xr.Dataset, config: SelectionConfig) -> list[tuple[slice, slice]]:
    """Up to ``config.windows`` non-identical ``(y, x)`` windows, spread at random (seeded)."""
    return windows_of(cube.sizes[Y], cube.sizes[X], config)


def validation_pixels(ny: int, nx: int, config: SelectionConfig | None = None) -> int:
    """Pixels the validation reads on an ``ny`` x ``nx`` grid.

    Its cost does not grow past ``windows x window²`` (what :mod:`fusecube.runner.plan` counts).
    """
    return sum((ys.stop - ys.start) * (xs.stop - xs.start)
               for ys, xs in windows_of(ny, nx, config or SelectionConfig()))


def windows_of(ny: int, nx: int, config: SelectionConfig) -> list[tuple[slice, slice]]:
    """The windows of :func:`validation_windows` for a grid of ``ny`` x ``nx`` pixels."""
    rng = np.random.default_rng([config.seed, 11])
    edge = config.window
    per_axis = max(1, int(np.ceil(np.sqrt(config.windows))))
    ys = _window_starts(ny, edge, per_axis, rng)
    xs = _window_starts(nx, edge, per_axis, rng)
    pairs = [(y0, x0) for y0 in ys for x0 in xs]
    keep = rng.permutation(len(pairs))[:config.windows]
    return [(slice(pairs[k][0], min(ny, pairs[k][0] + edge)),
             slice(pairs[k][1], min(nx, pairs[k][1] + edge))) for k in sorted(keep)]


def held_out_dates(observed: np.ndarray, share: float, rng: np.random.Generator) -> np.ndarray:
    """``(T,)`` bool: dates hidden whole, among those with at least 5 % of pixels observed."""
    per_date = observed.reshape(observed.shape[0], -1).mean(axis=1)
    eligible = np.flatnonzero(per_date >= 0.05)
    held = np.zeros(observed.shape[0], bool)
    if eligible.size < 3:  # too few dates to lose one
        return held
    k = int(np.clip(round(share * eligible.size), 1, eligible.size - 2))
    held[rng.choice(eligible, size=k, replace=False)] = True
    return held


def span_mask(shape: tuple[int, int, int], span: int, share: float,
              rng: np.random.Generator) -> np.ndarray:
    """``(T, Y, X)`` bool: a run of 1..``span`` dates for a ``share`` of the pixels."""
    n_t, ny, nx = shape
    start = rng.integers(0, n_t, (ny, nx))
    length = rng.integers(1, span + 1, (ny, nx))
    chosen = rng.random((ny, nx)) < share
    dates = np.arange(n_t)[:, None, None]
    return chosen[None] & (dates >= start[None]) & (dates < (start + length)[None])


# ----------------------------------------------------------------------------- filling
def _fill(method: str, shown: xr.Dataset, *, lam: float, ridge: RidgeConfig) -> np.ndarray:
    if method == "ridge":
        filled = fuse_ridge(shown, config=ridge)
    else:
        filled = baseline_gapfill(shown, method=method, lam=lam)
    return np.asarray(filled[NDVI_FUSED].transpose(*DIMS).values, np.float64)


# ----------------------------------------------------------------------------- scoring
@dataclass
class _Errors:
    """Squared errors summed per spatial tile, per method and scheme, for the bootstrap."""

    sse: dict[str, np.ndarray] = field(default_factory=dict)   # method -> (tiles, schemes)
    count: np.ndarray | None = None                             # (tiles, schemes)
    strata: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def add(self, method: str, sse: np.ndarray) -> None:
        self.sse[method] = sse if method not in self.sse else np.concatenate([self.sse[method], sse])


def _tile_sums(values: np.ndarray, scheme_masks: list[np.ndarray], tile: int) -> np.ndarray:
    """``(tiles, schemes)`` sums of ``values`` ``(T, Y, X)`` over each tile and scheme."""
    n_t, ny, nx = values.shape
    ty, tx = -(-ny // tile), -(-nx // tile)
    ids = (np.arange(ny)[:, None] // tile) * tx + np.arange(nx)[None] // tile
    out = np.zeros((ty * tx, len(scheme_masks)))
    for k, mask in enumerate(scheme_masks):
        per_pixel = np.where(mask, values, 0.0).sum(axis=0)
        out[:, k] = np.bincount(ids.ravel(), per_pixel.ravel(), minlength=ty * tx)
    return out


def _rmse(sse: np.ndarray, count: np.ndarray) -> float:
    total = count.sum()
    return float(np.sqrt(sse.sum() / total)) if total else float("nan")


def _bootstrap(errors: _Errors, config: SelectionConfig) -> dict[str, np.ndarray]:
    """Per method, ``(resamples,)`` RMSE over tiles drawn with replacement (same draws for all)."""
    count = errors.count.sum(axis=1)
    tiles = np.flatnonzero(count > 0)
    if tiles.size < 2:
        return {}
    rng = np.random.default_rng([config.seed, 12])
    draws = tiles[rng.integers(0, tiles.size, (config.resamples, tiles.size))]
    n = count[draws].sum(axis=1)
    return {m: np.sqrt(sse.sum(axis=1)[draws].sum(axis=1) / n) for m, sse in errors.sse.items()}


def _best_whittaker(errors: _Errors, strata_sse: dict, strata_n: dict) -> dict:
    """Keep the Whittaker variant (``linear_below``) with the lowest RMSE as ``whittaker``."""
    variants = {0: "whittaker", **{k: f"whittaker:{k}" for k in LINEAR_BELOW[1:]}}
    variants = {k: m for k, m in variants.items() if m in errors.sse}
    if len(variants) < 2:
        return {}
    rmse = {k: _rmse(errors.sse[m], errors.count) for k, m in variants.items()}
    best = min(rmse, key=lambda k: (rmse[k], k))
    errors.sse["whittaker"] = errors.sse[variants[best]]
    for name in ("paddy", "other"):
        if ("whittaker", name) in strata_sse:
            strata_sse[("whittaker", name)] = strata_sse[(variants[best], name)]
    for k, m in variants.items():
        if k:
            del errors.sse[m]
            strata_sse.pop((m, "paddy"), None), strata_sse.pop((m, "other"), None)
    return {"linear_below": int(best), "rmse_by_linear_below": {str(k): v for k, v in rmse.items()}}


SHUFFLED = "ridge:radar-shuffled"
"""Ridge fitted and scored with the radar shuffled between pixels (the radar check)."""


def _shuffle_radar(part: xr.Dataset, rng: np.random.Generator) -> xr.Dataset:
    """``part`` with each pixel's VV and VH series swapped for another pixel's.

    One random permutation of the pixels, the same for both: radar that says nothing about
    the pixel.
    """
    out = part.copy()
    ny, nx = part.sizes[Y], part.sizes[X]
    donor = rng.permutation(ny * nx)
    for name in (VV, VH):
        values = np.asarray(part[name].transpose(TIME, Y, X).values)
        out[name] = ((TIME, Y, X), values.reshape(values.shape[0], -1)[:, donor].reshape(values.shape))
    return out


def _radar_check(errors: _Errors, boot: dict[str, np.ndarray], comparable: bool) -> dict:
    """Ridge against itself with the radar shuffled: what S1 brings (pops the shuffled run).

    Not ``comparable`` (the shuffled run left values open that ridge filled: radar gaps moved
    to other pixels): no check rather than a gain made of unfilled values.
    """
    shuffled = errors.sse.pop(SHUFFLED)
    wins = boot.pop(SHUFFLED, None)
    if not comparable:
        return {}
    rmse, rmse_shuffled = _rmse(errors.sse["ridge"], errors.count), _rmse(shuffled, errors.count)
    return {"rmse_radar_shuffled": rmse_shuffled,
            "radar_gain": 100 * (1 - rmse / rmse_shuffled) if rmse_shuffled > 0 else 0.0,
            "radar_wins": float(np.mean(boot["ridge"] < wins)) if wins is not None else None}


def score_candidates(cube: xr.Dataset, candidates: list[str], *, mask: xr.DataArray | None = None,
                     lam: float = 2.0, ridge: RidgeConfig | None = None,
                     config: SelectionConfig | None = None) -> tuple[list[MethodScore], dict]:
    """Score ``candidates`` (baselines and ``ridge``) on values hidden from a screened cube.

    Args:
        cube: The screened input cube (``ndvi``; ``vv``, ``vh`` for ridge), lazy is fine: only
            the validation windows are read.
        candidates: Methods to score (``linear``, ``whittaker``, ``ridge``).
        mask: The run's paddy mask, for per-stratum scores.
        lam: Whittaker λ of the ``whittaker`` baseline.
        ridge: Ridge options (the run's).
        config: Validation options.

    Returns:
        ``(scores, what was hidden)``; scores are in ``candidates`` order.
    """
    config = config or SelectionConfig()
    ridge = ridge or RidgeConfig()
    rng = np.random.default_rng([config.seed, 13])
    windows = validation_windows(cube, config)
    parts = []
    for ys, xs in windows:
        names = [n for n in (NDVI, VV, VH) if n in cube]
        part = cube[names].isel({Y: ys, X: xs}).transpose(TIME, Y, X).load()
        if mask is not None:
            part[PADDY_MASK] = mask.isel({Y: ys, X: xs})
        parts.append(part)
    observed_all = np.concatenate([np.isfinite(p[NDVI].values).reshape(p.sizes[TIME], -1)
                                   for p in parts], axis=1)
    helds = [held_out_dates(observed_all, config.holdout_dates, rng)
             for _ in range(config.repeats)]
    errors = _Errors()
    check_radar = config.radar_check and "ridge" in candidates and VV in cube and VH in cube
    shuffle_rng = np.random.default_rng([config.seed, 14])  # the hidden values do not move
    seconds = dict.fromkeys(candidates, 0.0)
    counts, strata_sse, strata_n = [], {}, {}
    hidden_total = dict.fromkeys(SCHEMES, 0)
    unfilled = dict.fromkeys(candidates, 0)
    for held, part in ((h, p) for h in helds for p in parts):
        ndvi = np.asarray(part[NDVI].values, np.float64)
        observed = np.isfinite(ndvi)
        by_date = observed & held[:, None, None]
        by_span = observed & ~by_date & span_mask(ndvi.shape, config.span, config.span_share, rng)
        hide = by_date | by_span
        shown = part.copy()
        shown[NDVI] = part[NDVI].where(~xr.DataArray(hide, dims=(TIME, Y, X)))
        preds = {}
        for method in candidates:
            t0 = time.perf_counter()
            preds[method] = _fill(method, shown, lam=lam, ridge=ridge)
            seconds[method] += time.perf_counter() - t0
        if check_radar:  # the same model on radar that belongs to other pixels
            t0 = time.perf_counter()
            preds[SHUFFLED] = _fill("ridge", _shuffle_radar(shown, shuffle_rng), lam=lam,
                                    ridge=ridge)
            seconds["ridge"] += time.perf_counter() - t0
        if "whittaker" in preds and "linear" in preds:  # Whittaker joining short gaps linearly
            gaps = np.moveaxis(gap_lengths(np.moveaxis(np.asarray(shown[NDVI].values), 0, -1)),
                               -1, 0)
            for k in LINEAR_BELOW[1:]:
                preds[f"whittaker:{k}"] = np.where(gaps <= k, preds["linear"], preds["whittaker"])
        # score the values the baselines filled; a candidate that leaves some of them as gaps
        # is not comparable (and not eligible): its misses are recorded
        baselines_filled = [np.isfinite(v) for m, v in preds.items() if m in BASELINES]
        unfilled.update({m: unfilled.get(m, 0) for m in preds})
        scored = hide & (np.logical_and.reduce(baselines_filled) if baselines_filled else True)
        for method, pred in preds.items():
            unfilled[method] += int((scored & ~np.isfinite(pred)).sum())
        by_date, by_span = by_date & scored, by_span & scored
        for scheme, m in zip(SCHEMES, (by_date, by_span), strict=True):
            hidden_total[scheme] += int(m.sum())
        counts.append(_tile_sums(np.ones_like(ndvi), [by_date, by_span], config.tile))
        paddy = (np.asarray(part[PADDY_MASK].values) > 0) if PADDY_MASK in part else None
        for method, pred in preds.items():
            sq = np.where(scored, (np.nan_to_num(pred) - np.nan_to_num(ndvi)) ** 2, 0.0)
            errors.add(method, _tile_sums(sq, [by_date, by_span], config.tile))
            if paddy is not None:
                for name, sel in (("paddy", paddy), ("other", ~paddy)):
                    key = (method, name)
                    strata_sse[key] = strata_sse.get(key, 0.0) + float(sq[:, sel].sum())
                    strata_n[key] = strata_n.get(key, 0) + int(scored[:, sel].sum())
    errors.count = np.concatenate(counts)
    whittaker_params = _best_whittaker(errors, strata_sse, strata_n)
    boot = _bootstrap(errors, config)
    radar_params = (_radar_check(errors, boot, unfilled[SHUFFLED] <= unfilled["ridge"])
                    if check_radar else {})
    present = [m for m in BASELINES if m in candidates]
    scores = []
    for method in candidates:
        sse = errors.sse[method]
        low = high = None
        wins = {}
        if boot:
            low, high = (float(v) for v in np.quantile(boot[method], [0.025, 0.975]))
            wins = {ref: float(np.mean(boot[method] < boot[ref])) for ref in present
                    if ref != method}
        note = ""
        rmse = _rmse(sse, errors.count)
        if unfilled[method]:  # gaps left open: not comparable with methods that filled them
            note = (f"left {unfilled[method]} of {int(errors.count.sum())} hidden values "
                    "unfilled; not eligible")
            rmse, low, high, wins = float("nan"), None, None, {}
        scores.append(MethodScore(
            method=method, rmse=rmse, low=low, high=high, note=note,
            n=int(errors.count.sum()), wins=wins, seconds=round(seconds[method], 3),
            by_scheme={s: _rmse(sse[:, k], errors.count[:, k]) for k, s in enumerate(SCHEMES)},
            by_stratum={name: float(np.sqrt(strata_sse[(method, name)] / strata_n[(method, name)]))
                        for (m, name) in strata_sse if m == method and strata_n[(m, name)]},
            params={"whittaker": whittaker_params, "ridge": radar_params}.get(method, {})))
    hidden = {"windows": [[w[0].start, w[0].stop, w[1].start, w[1].stop] for w in windows],
              "held_dates": [[str(np.datetime_as_string(t, unit="D"))
                              for t in cube[TIME].values[held]] for held in helds],
              "values": hidden_total}
    return scores, hidden
