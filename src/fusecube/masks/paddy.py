"""Paddy map from the time series itself: the detection stage.

Both detectors work on the features of :mod:`fusecube.masks.paddy_features` and give a
``paddy_probability`` map (0..1); :func:`detect_paddy` turns it into a binary ``paddy_mask``
after a minimum-mapping-unit clean-up (:func:`fusecube.masks.area.clean_mask`).

* ``rules`` (:mod:`fusecube.masks.paddy_rules`) needs no labels: the probability is a fuzzy
  AND of physically motivated ramps.
* ``supervised`` (:mod:`fusecube.masks.paddy_classifier`) trains a gradient-boosting
  classifier from labels of known paddy, validated on spatial tiles it never saw.

:func:`paddy_mask_auto` is the one call behind ``mask: auto`` in a run configuration.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np
import xarray as xr

from fusecube.cube import PADDY_MASK, X, Y
from fusecube.errors import MaskError
from fusecube.masks.area import clean_mask, mmu_pixels, paddy_area_km2
from fusecube.masks.paddy_classifier import PaddyClassifier
from fusecube.masks.paddy_features import FeatureConfig, paddy_features
from fusecube.masks.paddy_rules import DEFAULT_RULES, PADDY_PROBABILITY, PaddyRule, rule_probability

log = logging.getLogger(__name__)


PaddyMethod = Literal["rules", "supervised"]


@dataclass(frozen=True)
class PaddyConfig:
    """Options of the paddy detection stage."""

    method: PaddyMethod = "rules"
    """``rules`` (no labels) or ``supervised`` (needs labels)."""
    threshold: float = 0.5
    """Probability at or above which a pixel is paddy."""
    min_mapping_unit_ha: float = 1.0
    """Smallest paddy patch (and non-paddy hole) kept, hectares (4 px at 50 m); 0 disables."""
    rules: tuple[PaddyRule, ...] = DEFAULT_RULES
    """Rules of the rule-based detector."""
    features: FeatureConfig = FeatureConfig()
    """Feature options."""


def detect_paddy(cube: xr.Dataset, *, config: PaddyConfig = PaddyConfig(),
                 labels: xr.DataArray | None = None, classifier: PaddyClassifier | None = None,
                 features: xr.DataArray | None = None) -> xr.Dataset:
    """Map paddy from a cube: probability, binary mask (cleaned) and the features used.

    Args:
        cube: Cube with ``vv``, ``vh`` and NDVI on ``(time, y, x)``.
        config: Detection options.
        labels: ``(y, x)`` training labels for ``method="supervised"`` (1 / 0 / 255 unknown),
            ignored when ``classifier`` is given.
        classifier: An already trained classifier (applied as it is).
        features: Precomputed features (computed from ``cube`` when None).

    Returns:
        Dataset with ``paddy_probability`` (float32), ``paddy_mask`` (uint8) and
        ``paddy_features``; attrs ``paddy_km2``, ``method``, ``threshold``, ``mmu_pixels``,
        ``speckle_window``, ``enl_estimate`` and, with a classifier, ``validation_*`` scores of
        its held-out tiles.
    """
    if features is None:
        features = paddy_features(cube, config=config.features)
    attrs: dict = {"method": config.method, "threshold": config.threshold}
    if config.method == "rules":
        prob = rule_probability(features, config.rules)
    elif config.method == "supervised":
        if classifier is None:
            if labels is None:
                raise MaskError("method='supervised' needs labels of known paddy (a vector file "
                                "via labels_from_vector) or a trained classifier; or use "
                                "method='rules'.")
            classifier = PaddyClassifier().fit(features, labels)
        prob = classifier.predict_proba(features)
        attrs.update({f"validation_{k}": v for k, v in classifier.validation_.items()
                      if k in ("f1", "iou", "precision", "recall", "n")})
    else:
        raise MaskError(f"Unknown paddy method {config.method!r}; use 'rules' or 'supervised'.")
    geobox = cube.odc.geobox
    raw = np.nan_to_num(prob.values, nan=0.0) >= config.threshold
    n_mmu = mmu_pixels(config.min_mapping_unit_ha, geobox) if config.min_mapping_unit_ha > 0 else 1
    mask = clean_mask(raw, n_mmu)
    out = xr.Dataset({PADDY_PROBABILITY: prob,
                      PADDY_MASK: ((Y, X), mask, {"long_name": "Rice paddy mask (1 paddy, 0 other)",
                                                  "units": "1", "method": config.method}),
                      "paddy_features": features},
                     coords={Y: cube[Y], X: cube[X]})
    out = out.odc.assign_crs(geobox.crs)
    attrs.update(mmu_pixels=n_mmu, paddy_km2=paddy_area_km2(out[PADDY_MASK]),
                 **{k: features.attrs[k] for k in ("speckle_window", "enl_estimate")
                    if k in features.attrs})
    out.attrs.update(attrs)
    log.info("paddy (%s): %.1f km² mapped, MMU %d px", config.method, attrs["paddy_km2"], n_mmu)
    return out


def paddy_mask_auto(cube: xr.Dataset, *, config: PaddyConfig = PaddyConfig(),
                    labels: xr.DataArray | None = None) -> xr.DataArray:
    """The paddy mask of a cube detected from its own time series (``mask: auto``).

    Args:
        cube: Cube with ``vv``, ``vh`` and NDVI.
        config: Detection options (rule-based by default: needs no labels).
        labels: Training labels when ``config.method == "supervised"``.

    Returns:
        ``(y, x)`` uint8 DataArray named ``paddy_mask`` on the cube's grid, with the
        probability map in ``.attrs`` omitted (use :func:`detect_paddy` for it).
    """
    result = detect_paddy(cube, config=config, labels=labels)
    mask = result[PADDY_MASK]
    mask.attrs.update({k: v for k, v in result.attrs.items() if isinstance(v, int | float | str)})
    return mask
