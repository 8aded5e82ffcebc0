"""Paddy map from the time series itself: a rule-based detector and a supervised classifier.

Both work on the features of :mod:`fusecube.masks.paddy_features` and give a ``paddy_probability``
map (0..1) and a binary ``paddy_mask`` after a minimum-mapping-unit clean-up.

* ``rules`` needs no labels. Each rule is a logistic ramp around a documented threshold with
  its physical reason (:data:`DEFAULT_RULES`); the probability is the product of the ramps (a
  fuzzy AND), so a pixel is paddy only when every piece of evidence agrees.
* ``supervised`` trains a gradient-boosting classifier (scikit-learn) from labels of known
  paddy, e.g. irrigation-block polygons (:func:`labels_from_vector`), validates it on spatial
  tiles it never saw, and applies it anywhere.

:func:`paddy_mask_auto` is the one call behind ``mask: auto`` in a run configuration.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import xarray as xr
from odc.geo.geobox import GeoBox

from fusecube.cube import PADDY_MASK, X, Y
from fusecube.errors import MaskError, require
from fusecube.masks.paddy_features import FEATURE, FEATURE_NAMES, FeatureConfig, paddy_features

log = logging.getLogger(__name__)

PaddyMethod = Literal["rules", "supervised"]
PADDY_PROBABILITY = "paddy_probability"
UNKNOWN = 255
"""Label value of pixels whose class is not known (neither used for training nor validation)."""


# ----------------------------------------------------------------------------- rules
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


# ----------------------------------------------------------------------------- labels
def labels_from_vector(path: str | Path, geobox: GeoBox, *,
                       region: Literal["bbox", "all"] | tuple[float, float, float, float] = "bbox",
                       ) -> xr.DataArray:
    """Training labels from polygons of known paddy (e.g. irrigation blocks).

    Inside ``region``, pixels under a polygon are paddy (1) and the others are taken as not
    paddy (0); outside ``region`` the class is unknown (255) and neither trains nor validates.

    Args:
        path: Vector file of paddy polygons, any CRS (read and repaired by
            :func:`fusecube.masks.files.vector_mask_with_report`).
        geobox: The cube grid.
        region: Where the polygons are complete: ``"bbox"`` (their bounding box, the default:
            the area the map was drawn for), ``"all"`` (the whole cube), or a bounding box
            ``(left, bottom, right, top)`` in the cube's CRS.

    Returns:
        ``(y, x)`` uint8 labels with attributes ``paddy_km2`` and ``polygon_km2``.
    """
    from fusecube.masks.files import vector_mask_with_report

    burned, report = vector_mask_with_report(path, geobox)
    ny, nx = geobox.shape
    known = np.zeros((ny, nx), dtype=bool)
    if region == "all":
        known[:] = True
    else:
        if region == "bbox":
            rows, cols = np.nonzero(burned)
            r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        else:
            if isinstance(region, str) or len(region) != 4:
                raise MaskError(f"Label region {region!r} must be 'bbox', 'all' or "
                                "(left, bottom, right, top) in the cube's CRS.")
            left, bottom, right, top = (float(v) for v in region)
            inv = ~geobox.affine
            c_a, r_a = inv * (left, top)
            c_b, r_b = inv * (right, bottom)
            r0, r1 = sorted((int(np.clip(math.floor(min(r_a, r_b)), 0, ny)),
                             int(np.clip(math.ceil(max(r_a, r_b)), 0, ny))))
            c0, c1 = sorted((int(np.clip(math.floor(min(c_a, c_b)), 0, nx)),
                             int(np.clip(math.ceil(max(c_a, c_b)), 0, nx))))
            if r1 <= r0 or c1 <= c0:
                raise MaskError(f"Label region {region} does not overlap the cube "
                                f"{geobox.extent.boundingbox}; give it in the cube's CRS "
                                f"({geobox.crs}).")
        known[r0:r1, c0:c1] = True
    labels = np.where(known, burned > 0, UNKNOWN).astype(np.uint8)
    coords = odc_coords(geobox)
    return xr.DataArray(labels, dims=(Y, X), coords=coords, name="paddy_labels",
                        attrs={"paddy_km2": report.km2, "polygon_km2": report.polygon_km2,
                               "source": str(path), "flag_values": [0, 1, UNKNOWN],
                               "flag_meanings": "not_paddy paddy unknown"})


def odc_coords(geobox: GeoBox) -> dict:
    """y/x coordinates of a GeoBox (with its CRS), as xarray coords."""
    import odc.geo.xr

    return odc.geo.xr.xr_coords(geobox)


# ----------------------------------------------------------------------------- supervised
def spatial_tiles(shape: tuple[int, int], tile: int) -> np.ndarray:
    """``(y, x)`` int tile index of each pixel for square tiles of ``tile`` pixels."""
    ny, nx = shape
    n_tx = -(-nx // tile)
    return (np.arange(ny)[:, None] // tile) * n_tx + (np.arange(nx)[None, :] // tile)


def spatial_split(labels: np.ndarray, *, tile: int, validation_fraction: float, buffer: int,
                  seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split labelled pixels into training and validation sets by whole spatial tiles.

    Validation tiles are drawn at random among tiles with labels; training pixels closer than
    ``buffer`` pixels to a validation tile are dropped, so neighbours of validation pixels (same
    field, same calendar) do not leak into training.

    Returns:
        ``(train, validate)`` boolean ``(y, x)`` masks.
    """
    from scipy import ndimage

    labelled = labels != UNKNOWN
    tiles = spatial_tiles(labels.shape, tile)
    candidates = np.unique(tiles[labelled])
    if candidates.size < 2:
        raise MaskError(
            f"The labels cover only {candidates.size} tile(s) of {tile} px; spatially separated "
            "validation needs at least two. Give labels over a larger area or a smaller tile.")
    rng = np.random.default_rng(seed)
    # stratified: draw from tiles with paddy and tiles without, so both classes get validated
    with_paddy = np.unique(tiles[labels == 1])
    groups = [with_paddy, np.setdiff1d(candidates, with_paddy)]
    val_tiles = np.concatenate([
        rng.choice(g, size=min(max(1, int(round(validation_fraction * g.size))), g.size - 1),
                   replace=False) if g.size > 1 else np.empty(0, g.dtype)
        for g in groups])
    if val_tiles.size == 0:
        val_tiles = rng.choice(candidates, size=1, replace=False)
    in_val = np.isin(tiles, val_tiles)
    validate = labelled & in_val
    near = ndimage.binary_dilation(in_val, iterations=buffer) if buffer > 0 else in_val
    train = labelled & ~near
    return train, validate


def binary_scores(predicted: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Accuracy, precision, recall, F1, IoU and counts of a 0/1 prediction against 0/1 truth."""
    p = np.asarray(predicted).astype(bool).ravel()
    r = np.asarray(reference).astype(bool).ravel()
    tp = int((p & r).sum())
    fp = int((p & ~r).sum())
    fn = int((~p & r).sum())
    tn = int((~p & ~r).sum())
    precision = tp / (tp + fp) if tp + fp else float("nan")
    recall = tp / (tp + fn) if tp + fn else float("nan")
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")
    iou = tp / (tp + fp + fn) if tp + fp + fn else float("nan")
    return {"n": int(p.size), "tp": tp, "fp": fp, "fn": fn, "tn": tn,
            "accuracy": (tp + tn) / max(p.size, 1), "precision": precision, "recall": recall,
            "f1": f1, "iou": iou}


#: Features the classifier uses by default: those that describe the land cover whatever the local
#: calendar. Timing and season-count features (``dip_interval_days``, ``ndvi_season_length``,
#: ``ndvi_seasons_per_year``) are left out: labels from one district with three seasons a year
#: would teach "a flood every 118 days" and reject two-season paddy elsewhere.
SUPERVISED_FEATURES: tuple[str, ...] = tuple(
    n for n in FEATURE_NAMES
    if n not in ("dip_interval_days", "ndvi_season_length", "ndvi_seasons_per_year"))

#: Physical monotonic constraints (+1: more means more rice-like), so a classifier trained on
#: one kind of paddy extrapolates the right way (e.g. fewer floods a year than it saw).
MONOTONIC: dict[str, int] = {"flood_dips_per_year": 1, "vh_rise_db": 1, "vh_range_db": 1,
                             "ndvi_amplitude": 1}


@dataclass
class PaddyClassifier:
    """Gradient-boosting paddy classifier trained from labels, validated on held-out tiles.

    scikit-learn manners: options here, learning in :meth:`fit`, use in :meth:`predict_proba`;
    fitted state ends in ``_``.
    """

    max_iter: int = 150
    """Boosting iterations."""
    learning_rate: float = 0.1
    """Shrinkage."""
    max_leaf_nodes: int = 15
    """Leaves per tree (small: few, physically meaningful features)."""
    tile: int = 32
    """Edge (pixels) of the spatial tiles used for validation (32 px = 1.6 km at 50 m)."""
    validation_fraction: float = 0.25
    """Share of labelled tiles held out for validation."""
    buffer: int = 2
    """Training pixels this close (pixels) to a validation tile are not used."""
    max_samples: int = 200_000
    """Training pixels at most (a random subset beyond that keeps training fast)."""
    seed: int = 0
    """Random seed (tile draw, subsample, boosting)."""
    features: tuple[str, ...] = SUPERVISED_FEATURES
    """Feature names the model uses (see :data:`SUPERVISED_FEATURES`)."""
    monotonic: dict[str, int] = field(default_factory=lambda: dict(MONOTONIC))
    """Monotonic constraint per feature (+1 / -1); features not named are unconstrained."""
    n_threads: int | None = None
    """Threads for training and prediction (None: the OpenMP default, all cores). On a machine
    whose cores are shared with other work, 1 is often fastest."""
    model_: object | None = field(default=None, init=False, repr=False)
    feature_names_: tuple[str, ...] = field(default=(), init=False)
    validation_: dict[str, float] = field(default_factory=dict, init=False)
    n_train_: int = field(default=0, init=False)

    def _threads(self):
        """Context limiting the OpenMP threads of scikit-learn to ``n_threads``."""
        import contextlib

        if self.n_threads is None:
            return contextlib.nullcontext()
        threadpoolctl = require("threadpoolctl", "ml")
        return threadpoolctl.threadpool_limits(limits=self.n_threads)

    def _columns(self, features: xr.DataArray) -> np.ndarray:
        """``(N, len(self.features))`` matrix of the model's features."""
        names = [str(v) for v in features[FEATURE].values]
        missing = [n for n in self.features if n not in names]
        if missing:
            raise MaskError(f"Features {missing} are not in the feature array ({names}); "
                            "compute them with fusecube.masks.paddy_features.paddy_features.")
        return _flat(features.sel({FEATURE: list(self.features)}))

    def fit(self, features: xr.DataArray, labels: xr.DataArray) -> PaddyClassifier:
        """Train on labelled pixels of spatial training tiles; score the held-out tiles.

        Args:
            features: ``(feature, y, x)`` from :func:`~fusecube.masks.paddy_features.paddy_features`.
            labels: ``(y, x)`` uint8: 1 paddy, 0 not paddy, 255 unknown (same grid).

        Returns:
            self, with ``model_``, ``validation_`` (scores on the held-out tiles) and ``n_train_``.
        """
        ensemble = require("sklearn.ensemble", "ml")
        lab = np.asarray(labels.values)
        if lab.shape != (features.sizes[Y], features.sizes[X]):
            raise MaskError(f"Labels of shape {lab.shape} do not match the cube grid "
                            f"{(features.sizes[Y], features.sizes[X])}; rasterise them onto the "
                            "cube's GeoBox (labels_from_vector).")
        known = lab != UNKNOWN
        n_pos, n_neg = int((lab == 1).sum()), int((known & (lab == 0)).sum())
        if n_pos == 0 or n_neg == 0:
            raise MaskError(
                f"Training labels need both paddy and not-paddy pixels; got {n_pos} paddy and "
                f"{n_neg} not-paddy. Widen the label region (region='all' or a bounding box "
                "around the polygons) so it includes land outside the paddy polygons.")
        train, validate = spatial_split(lab, tile=self.tile,
                                        validation_fraction=self.validation_fraction,
                                        buffer=self.buffer, seed=self.seed)
        flat = self._columns(features)
        idx = np.flatnonzero(train.ravel())
        rng = np.random.default_rng(self.seed)
        if idx.size > self.max_samples:
            idx = np.sort(rng.choice(idx, self.max_samples, replace=False))
        y_train = lab.ravel()[idx]
        if np.unique(y_train).size < 2:
            raise MaskError(
                f"The training tiles hold only one class after the spatial split ({n_pos} paddy "
                f"labels in all); give labels over a larger area or a smaller tile (now "
                f"{self.tile} px).")
        model = ensemble.HistGradientBoostingClassifier(
            max_iter=self.max_iter, learning_rate=self.learning_rate,
            max_leaf_nodes=self.max_leaf_nodes, early_stopping=False, random_state=self.seed,
            monotonic_cst=[self.monotonic.get(n, 0) for n in self.features])
        with self._threads():
            model.fit(flat[idx], y_train)
        self.model_ = model
        self.feature_names_ = tuple(self.features)
        self.n_train_ = int(idx.size)
        vidx = np.flatnonzero(validate.ravel())
        with self._threads():
            pred = model.predict_proba(flat[vidx])[:, 1] >= 0.5
        self.validation_ = {**binary_scores(pred, lab.ravel()[vidx] == 1),
                            "n_train": self.n_train_, "tile": self.tile}
        log.info("paddy classifier: %d training pixels, held-out tiles F1 %.3f (n=%d)",
                 self.n_train_, self.validation_["f1"], vidx.size)
        return self

    def predict_proba(self, features: xr.DataArray) -> xr.DataArray:
        """Paddy probability map ``(y, x)`` for any cube's features."""
        if self.model_ is None:
            raise MaskError("The paddy classifier is not trained; call fit(features, labels) "
                            "first.")
        with self._threads():
            prob = self.model_.predict_proba(self._columns(features))[:, 1].astype(np.float32)
        return _as_map(prob, features, PADDY_PROBABILITY,
                       {"long_name": "Paddy probability (gradient boosting)", "units": "1",
                        "method": "supervised"})


# ----------------------------------------------------------------------------- clean-up, area
def clean_mask(mask: np.ndarray, min_pixels: int) -> np.ndarray:
    """Minimum mapping unit: drop paddy patches and fill non-paddy holes under ``min_pixels``.

    Connectivity is 4-neighbour (a sieve, like ``gdal_sieve``); patches are counted with one
    ``ndimage.label`` and a ``bincount``, no loop over patches.

    Args:
        mask: ``(y, x)`` 0/1 map.
        min_pixels: Smallest patch kept (1 or less: unchanged).

    Returns:
        The cleaned ``(y, x)`` uint8 map.
    """
    from scipy import ndimage

    out = np.asarray(mask).astype(bool)
    if min_pixels <= 1:
        return out.astype(np.uint8)
    for value in (True, False):  # remove small paddy islands, then fill small holes
        patches, _ = ndimage.label(out == value)
        sizes = np.bincount(patches.ravel())
        small = (sizes < min_pixels) & (np.arange(sizes.size) > 0)
        out = np.where(small[patches], not value, out)
    return out.astype(np.uint8)


def pixel_area_km2(geobox: GeoBox) -> np.ndarray:
    """``(ny, 1)`` area of the pixels of each row in km² (rows differ on geographic grids)."""
    from fusecube.masks.files import pixel_areas_km2

    return pixel_areas_km2(geobox)


def mmu_pixels(min_mapping_unit_ha: float, geobox: GeoBox) -> int:
    """Pixels in a minimum mapping unit of ``min_mapping_unit_ha`` hectares (at least 1)."""
    mean_km2 = float(pixel_area_km2(geobox).mean())
    return max(1, int(math.ceil(min_mapping_unit_ha / 100.0 / mean_km2 - 1e-9)))


def paddy_area_km2(mask: xr.DataArray) -> float:
    """Total paddy area in km² of a ``(y, x)`` 0/1 map carrying its grid."""
    areas = pixel_area_km2(mask.odc.geobox)
    return float(((np.asarray(mask.values) > 0) * areas).sum())


def paddy_area_by_polygon(mask: xr.DataArray, polygons: str | Path, *,
                          id_column: str | None = None):
    """Paddy area inside each polygon (administrative units, irrigation blocks, ...).

    Each pixel counts for the polygon covering its centre (the last one where polygons overlap).

    Args:
        mask: ``(y, x)`` 0/1 paddy map with its grid.
        polygons: Vector file, any CRS.
        id_column: Column naming the polygons (default: the row number).

    Returns:
        A pandas DataFrame with ``id``, ``paddy_km2``, ``polygon_km2`` (pixels inside) and
        ``paddy_fraction``, one row per polygon.
    """
    import pandas as pd

    gpd = require("geopandas", "geo")
    from rasterio import features

    path = Path(polygons)
    try:
        gdf = gpd.read_file(path)
    except Exception as exc:
        from fusecube.errors import InputFileError

        raise InputFileError(f"Polygons {path} cannot be read as a vector file ({exc}); give "
                             "a Shapefile, GeoPackage or GeoJSON.") from exc
    if gdf.crs is None:
        raise MaskError(f"Polygons {path} have no CRS; set one (e.g. a .prj file).")
    if id_column is not None and id_column not in gdf.columns:
        raise MaskError(f"Polygons {path} have no column {id_column!r}; columns are "
                        f"{[c for c in gdf.columns if c != 'geometry']}.")
    geobox = mask.odc.geobox
    geoms = gdf.geometry.to_crs(geobox.crs.to_wkt())
    geoms = geoms.where(geoms.is_valid, geoms.make_valid())
    zone = features.rasterize(((g, i + 1) for i, g in enumerate(geoms) if g is not None
                               and not g.is_empty),
                              out_shape=geobox.shape, transform=geobox.affine, fill=0,
                              dtype="int32")
    areas = np.broadcast_to(pixel_area_km2(geobox), geobox.shape)
    paddy = np.asarray(mask.values) > 0
    n = len(gdf) + 1
    total = np.bincount(zone.ravel(), weights=areas.ravel(), minlength=n)[1:]
    inside = np.bincount(zone.ravel(), weights=(areas * paddy).ravel(), minlength=n)[1:]
    ids = gdf[id_column].to_numpy() if id_column else np.arange(len(gdf))
    with np.errstate(invalid="ignore", divide="ignore"):
        fraction = np.where(total > 0, inside / np.where(total > 0, total, 1), np.nan)
    return pd.DataFrame({"id": ids, "paddy_km2": inside, "polygon_km2": total,
                         "paddy_fraction": fraction})


# ----------------------------------------------------------------------------- the stage
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
