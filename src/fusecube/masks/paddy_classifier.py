"""Supervised paddy classifier: gradient boosting (scikit-learn) trained from labels of known paddy.

Labels come from e.g. irrigation-block polygons
(:func:`~fusecube.masks.paddy_labels.labels_from_vector`); the classifier is validated on
spatial tiles it never saw and applies anywhere.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import xarray as xr

from fusecube.cube import X, Y
from fusecube.errors import MaskError, require
from fusecube.masks.paddy_features import FEATURE, FEATURE_NAMES
from fusecube.masks.paddy_labels import UNKNOWN, binary_scores, spatial_split
from fusecube.masks.paddy_rules import PADDY_PROBABILITY, _as_map, _flat

log = logging.getLogger(__name__)


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
