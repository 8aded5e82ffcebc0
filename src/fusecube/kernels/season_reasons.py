"""Why a season slot is empty: reason codes (bit flags), vectorised over pixels.

Every empty slot of a pixel gets at least one flag; a slot holding a season gets 0. The
flags come from what the pipeline knows: the observations of the slot's agricultural year,
whether the series covers that year, and the candidate seasons the detection rejected by its
plausibility rules (length, peak). When none of these
applies, the curve has no further rise and fall of ``min_amplitude`` in that year: the
amplitude flag.
"""

from __future__ import annotations

import numpy as np

from fusecube.grid.periods import agricultural_year_index

TOO_FEW_OBSERVATIONS = 1
AMPLITUDE_BELOW_THRESHOLD = 2
IMPLAUSIBLE_LENGTH_OR_PEAK = 4
CUT_BY_SERIES_EDGE = 8
NOT_PADDY = 16
REASON_FLAGS = {
    "too_few_observations": TOO_FEW_OBSERVATIONS,
    "amplitude_below_threshold": AMPLITUDE_BELOW_THRESHOLD,
    "implausible_length_or_peak": IMPLAUSIBLE_LENGTH_OR_PEAK,
    "cut_by_series_edge": CUT_BY_SERIES_EDGE,
    "not_paddy": NOT_PADDY,
}
"""Bit of each reason in ``season_reason`` (CF ``flag_masks``)."""


def seasons_per_year(pos: np.ndarray, first_year: int, n_years: int,
                     start_month: int) -> np.ndarray:
    """``(N, n_years)`` number of seasons (finite ``pos`` days, ``(N, M)``) per agricultural year."""
    year = agricultural_year_index(pos, first_year, start_month)
    valid = np.isfinite(pos) & (year >= 0) & (year < n_years)
    count = np.zeros((pos.shape[0], n_years), np.int64)
    rows, cols = np.nonzero(valid)
    np.add.at(count, (rows, year[rows, cols]), 1)
    return count


def observations_per_year(observed: np.ndarray, days: np.ndarray, first_year: int,
                          n_years: int, start_month: int) -> tuple[np.ndarray, np.ndarray]:
    """``(N, n_years)`` observations per pixel and year, and ``(n_years,)`` dates per year."""
    year = agricultural_year_index(np.asarray(days, np.float64), first_year, start_month)
    onehot = (year[:, None] == np.arange(n_years)[None, :]).astype(np.float32)
    return (observed.astype(np.float32) @ onehot).astype(np.int64), onehot.sum(axis=0)


def years_cut(days: np.ndarray, years: list[int], start_month: int) -> np.ndarray:
    """``(n_years,)`` bool: the series starts after the year begins or ends before it ends."""
    days = np.asarray(days, np.float64)
    half = 0.5 * float(np.median(np.diff(days))) if days.size > 1 else 0.0
    starts = np.array([np.datetime64(f"{y:04d}-{start_month:02d}-01", "D") for y in
                       [*years, years[-1] + 1]]).astype("datetime64[D]").astype(np.float64)
    return (starts[:-1] < days[0] - half) | (starts[1:] > days[-1] + half + 1.0)


def season_reasons(has_season: np.ndarray, slot_year: np.ndarray, *, paddy: np.ndarray,
                   analysed: np.ndarray, observed_per_year: np.ndarray,
                   dates_per_year: np.ndarray, cut: np.ndarray, rejected_per_year: np.ndarray,
                   min_observations: int = 4,
                   min_observed_share: float = 0.25) -> np.ndarray:
    """``(N, S)`` uint8 reason flags of every empty slot (0 where the slot holds a season).

    Args:
        has_season: ``(N, S)`` bool, the slot holds a season.
        slot_year: ``(S,)`` agricultural-year index of each slot.
        paddy: ``(N,)`` bool, the pixel is paddy.
        analysed: ``(N,)`` bool, the pixel had a complete curve to analyse.
        observed_per_year: ``(N, n_years)`` observations per year.
        dates_per_year: ``(n_years,)`` dates of the series in each year.
        cut: ``(n_years,)`` the series does not cover the whole year.
        rejected_per_year: ``(N, n_years)`` candidate seasons the plausibility rules rejected.
        min_observations: Fewer observations in a year than this is too few.
        min_observed_share: So is observing less than this share of the year's dates.

    Returns:
        The flags, a sum of :data:`REASON_FLAGS` bits.
    """
    few_limit = np.maximum(min_observations, min_observed_share * dates_per_year)
    few = (observed_per_year < few_limit[None, :]) | ~analysed[:, None]
    implausible = rejected_per_year > 0
    reason = (few.astype(np.uint8) * TOO_FEW_OBSERVATIONS)[:, slot_year]
    reason |= (implausible.astype(np.uint8) * IMPLAUSIBLE_LENGTH_OR_PEAK)[:, slot_year]
    reason |= (cut.astype(np.uint8) * CUT_BY_SERIES_EDGE)[None, slot_year]
    reason = np.where(reason == 0, AMPLITUDE_BELOW_THRESHOLD, reason).astype(np.uint8)
    reason = np.where(paddy[:, None], reason, NOT_PADDY).astype(np.uint8)
    return np.where(has_season, 0, reason).astype(np.uint8)
