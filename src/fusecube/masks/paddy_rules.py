"""Rule-based paddy evidence: logistic ramps around documented thresholds, combined as a fuzzy AND.

Each rule is a ramp around a threshold with its physical reason (:data:`DEFAULT_RULES`); the
probability is the product of the ramps, so a pixel is paddy only when every piece of
evidence agrees. Needs no labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr

from fusecube.cube import X, Y
from fusecube.errors import MaskError
from fusecube.masks.paddy_features import FEATURE, FEATURE_NAMES

PADDY_PROBABILITY = "paddy_probability"


@dataclass(frozen=True)
class PaddyRule:
    """One piece of evidence for rice: a feature above (or below) a threshold."""

    feature: str
    """Name in :data:`~fusecube.masks.paddy_features.FEATURE_NAMES`."""
    threshold: float
    """Value where the evidence is 50 %."""
    above: bool
    """True when paddy lies above the threshold, False when below."""
    width: float
    """Width of the logistic ramp (feature units): evidence is 73 % one width past the threshold."""
    reason: str
    """Why the threshold is where it is, physically."""
    missing_is_neutral: bool = False
    """A NaN feature counts as no evidence either way (e.g. NDVI of a never-clear pixel)."""


DEFAULT_RULES: tuple[PaddyRule, ...] = (
    PaddyRule(
        "flood_dips_per_year", 0.9, True, 0.15,
        "Transplanted rice is flooded before every planting, 2-3 times a year in Java; at least "
        "about one open-water episode a year is needed. Other crops, trees and settlements are "
        "never open water (VH < -24 dB and VV < -17 dB)."),
    PaddyRule(
        "vh_median_db", -23.5, True, 0.5,
        "Most of the year a paddy holds soil or canopy (VH -22..-16 dB). Fish ponds and the sea "
        "are water nearly all year: their median VH stays at the specular level (~-27 dB)."),
    PaddyRule(
        "vh_rise_db", 6.0, True, 0.5,
        "After transplanting the canopy grows out of the water within 4-7 weeks and VH jumps "
        "from ~-27 dB to ~-17 dB (volume scattering replaces specular reflection). Stable "
        "surfaces only wobble by speckle (< ~5 dB after 3-period averaging); dryland crops "
        "rise from bare soil (-21 dB), about 4 dB."),
    PaddyRule(
        "ndvi_peak", 0.5, True, 0.05,
        "A rice canopy at heading is dense and green (NDVI > 0.6); ponds, water and settlements "
        "never get there. A pixel never seen clear gives no evidence.",
        missing_is_neutral=True),
)


def rule_probability_array(features: np.ndarray, rules: tuple[PaddyRule, ...] = DEFAULT_RULES,
                           names: tuple[str, ...] = FEATURE_NAMES) -> np.ndarray:
    """Rule-based paddy probability of ``(N, F)`` features; ``(N,)`` float32, NaN without radar.

    Args:
        features: Feature matrix, columns in ``names`` order.
        rules: The rules to combine (product of logistic ramps).
        names: Column names of ``features``.

    Returns:
        The probability per pixel.
    """
    score = np.ones(features.shape[0], dtype=np.float64)
    for rule in rules:
        if rule.feature not in names:
            raise MaskError(f"Paddy rule uses unknown feature {rule.feature!r}; "
                            f"use one of {list(names)}.")
        value = features[:, names.index(rule.feature)].astype(np.float64)
        z = (value - rule.threshold) / rule.width * (1.0 if rule.above else -1.0)
        ramp = 1.0 / (1.0 + np.exp(-np.clip(z, -40, 40)))
        ramp = np.where(np.isnan(value), 1.0 if rule.missing_is_neutral else np.nan, ramp)
        score *= ramp
    return score.astype(np.float32)


def _flat(features: xr.DataArray) -> np.ndarray:
    """``(feature, y, x)`` → ``(N, F)``."""
    return features.transpose(FEATURE, Y, X).values.reshape(features.sizes[FEATURE], -1).T


def _as_map(values: np.ndarray, like: xr.DataArray, name: str, attrs: dict) -> xr.DataArray:
    return xr.DataArray(values.reshape(like.sizes[Y], like.sizes[X]), dims=(Y, X),
                        coords={Y: like[Y], X: like[X]}, name=name, attrs=attrs)


def rule_probability(features: xr.DataArray,
                     rules: tuple[PaddyRule, ...] = DEFAULT_RULES) -> xr.DataArray:
    """Rule-based paddy probability map ``(y, x)`` from a features array."""
    names = tuple(str(v) for v in features[FEATURE].values)
    prob = rule_probability_array(_flat(features), rules, names)
    return _as_map(prob, features, PADDY_PROBABILITY,
                   {"long_name": "Paddy probability (rule-based evidence)", "units": "1",
                    "method": "rules"})
