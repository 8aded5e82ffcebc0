"""Neural fusion: S1 radar → NDVI gap-fill with a per-pixel temporal network.

:class:`NeuralFusion` has scikit-learn manners, like :class:`~fusecube.fusion.ridge.model.
RidgeFusion`: the training options in ``__init__``, learning in :meth:`NeuralFusion.fit`, use
in :meth:`NeuralFusion.predict`, fitted state in attributes ending in ``_``, and validation on
pixels and dates ``fit`` never trained on. The network lives in
:mod:`~fusecube.fusion.neural.network`, training in :mod:`~fusecube.fusion.neural.train`,
batched prediction in :mod:`~fusecube.fusion.neural.predict`.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import xarray as xr

from fusecube.cube import TIME, X, Y
from fusecube.errors import FusionModelError, InputFileError
from fusecube.fusion.neural.compat import check_input, check_state, load_weights, training_periods
from fusecube.fusion.neural.features import (
    CALENDAR_FEATURES,
    OPTICAL_FEATURES,
    Normalizer,
)
from fusecube.fusion.neural.network import (
    build_network,
    in_channels,
    mean_ensemble,
    require_torch,
    select_device,
)
from fusecube.fusion.neural.predict import fill_block, predict_series
from fusecube.fusion.neural.sizing import (
    best,
    candidate_record,
    size_candidates,
    size_record,
    validation_score,
)
from fusecube.fusion.neural.train import (
    PixelSample,
    TrainConfig,
    cap_sample,
    ensemble_members,
    holdout_inputs,
    member_seed,
    sample_pixels,
    seed_torch,
    train_network,
    training_pixels,
    validate,
)
from fusecube.storage.atomic import atomic_path

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


class NeuralFusion:
    """Gap-fill NDVI from S1 VV/VH with a network trained on the scene's own observations.

    Attributes:
        config: Training options (:class:`~fusecube.fusion.neural.train.TrainConfig`).
        net_: The fitted ``torch.nn.Module``.
        normalizer_: Radar channel statistics fitted on training pixels only.
        radar_features_: Radar channel names the network reads, in order.
        window_: Box-filter edge of the ``*_local`` radar channels.
        arch_: Keyword arguments of :func:`~fusecube.fusion.neural.network.build_network`.
        periods_: The time grid it was trained on (``n_times``, ``step_days``, ``first``,
            ``last``); None for an untrained network or a file without it.
        metrics_: Validation metrics (held-out blocks and dates) with the baselines beside.
        meta_: Training details: configuration, split, timings, versions.
    """

    def __init__(self, config: TrainConfig | None = None) -> None:
        self.config = config or TrainConfig()

    # ------------------------------------------------------------------------------ state
    def _set_network(self, net, normalizer: Normalizer, radar_features, window: int,
                     arch: dict) -> NeuralFusion:
        self.net_ = net
        self.normalizer_ = normalizer
        self.radar_features_ = tuple(radar_features)
        self.window_ = int(window)
        self.arch_ = dict(arch)
        self.periods_: dict | None = None
        self.metrics_: dict = {}
        self.meta_: dict = {}
        return self

    def build(self, normalizer: Normalizer, *, n_times: int | None = None,
              config: TrainConfig | None = None) -> NeuralFusion:
        """Set a fresh, untrained network with the configured recipe (what :meth:`fit` starts from).

        Args:
            normalizer: Radar statistics for ``config.radar_features``.
            n_times: Series length (needed by the ``mlp`` architecture only).
            config: The recipe (default ``self.config``; a size candidate while fitting).

        Returns:
            ``self``.
        """
        config = config or self.config
        arch: dict = {"arch": config.arch, "width": config.width}
        if config.arch == "mlp":
            arch["n_times"] = int(n_times) if n_times else None
        if config.arch == "conv":
            arch["dilations"] = [int(d) for d in config.dilations]
        net = build_network(in_channels(config.radar_features), **arch)
        return self._set_network(net, normalizer, config.radar_features, config.window, arch)

    @property
    def context_radius(self) -> int:
        """Pixels of neighbourhood the radar features read on each side of a pixel.

        ``*_local`` channels box-filter ``window_`` px, ``*_wide`` ones ``2 * window_ + 1``:
        a block read with this many extra pixels around it gives its pixels the features
        they would have in the whole scene.
        """
        radius = 0
        for name in self.radar_features_:
            if name.endswith("_wide"):
                radius = max(radius, self.window_)
            elif name.endswith("_local"):
                radius = max(radius, self.window_ // 2)
        return radius

    # ------------------------------------------------------------------------------ learning
    def _fit_config(self, init: NeuralFusion | None) -> TrainConfig:
        """The options a fit uses: fine-tuning keeps the features ``init`` was built on."""
        if init is None:
            return self.config
        return replace(self.config, radar_features=init.radar_features_, window=init.window_,
                       arch=init.arch_.get("arch", self.config.arch))

    def fit(self, cube: xr.Dataset, *, init: NeuralFusion | None = None) -> NeuralFusion:
        """Train on a scene (sampled pixels), validated on held-out blocks and dates.

        Args:
            cube: The cube (lazy or in memory) with ``vv``, ``vh``, ``ndvi`` and optionally
                ``ndvi_quality`` and ``paddy_mask``.
            init: A trained model to fine-tune (its features and normalisation are kept; the
                given object is not modified).

        Returns:
            ``self``; ``metrics_`` holds the validation scores beside the baselines.

        Raises:
            FusionModelError: ``init`` was built for another time grid, or nothing to learn.
        """
        if init is not None:
            n_times = init.arch_.get("n_times")
            if n_times and n_times != cube.sizes[TIME]:
                raise FusionModelError(
                    f"The model to fine-tune was built for {n_times} time steps; this cube has "
                    f"{cube.sizes[TIME]}. Train from scratch or resample the cube to the "
                    "model's periods.")
        started = time.perf_counter()
        config = self._fit_config(init)
        if init is None:  # the largest size candidate's sample; smaller ones take a part of it
            config = size_candidates(config, select_device(config.device))[0]
        sample = sample_pixels(cube, config)
        read_s = time.perf_counter() - started
        self.fit_sample(sample, init=init)
        self.meta_["seconds"]["read"] = round(read_s, 3)
        self.meta_["scene_shape"] = [int(cube.sizes[Y]), int(cube.sizes[X])]
        self.meta_["windows"] = sample.windows
        return self

    def fit_sample(self, sample: PixelSample, *, init: NeuralFusion | None = None) -> NeuralFusion:
        """Train on already-sampled pixels (see :meth:`fit`); the core of training.

        Pixels with role 1 are used only for validation. Without any, validation falls back to
        held-out dates on the training pixels, and ``metrics_["pixels_seen"]`` says so.

        Returns:
            ``self``.
        """
        config = self._fit_config(init)
        if init is not None:  # the given model stays as it was
            seed_torch(config)
            self._set_network(copy.deepcopy(init.net_), copy.deepcopy(init.normalizer_),
                              init.radar_features_, init.window_, init.arch_)
            self.metrics_, self.meta_ = train_network(self.net_, self.normalizer_, sample, config,
                                                      fine_tuned=True)
        else:
            self._fit_sized(sample, config)
        self.periods_ = training_periods(sample.times)
        return self

    def _fit_sized(self, sample: PixelSample, config: TrainConfig) -> None:
        """Train each size candidate (:mod:`~fusecube.fusion.neural.sizing`), keep the best."""
        device = select_device(config.device)
        candidates = size_candidates(config, device)
        fitted, records = [], []
        for candidate in candidates:
            part = sample if len(candidates) == 1 else cap_sample(sample, candidate)
            train = training_pixels(part)
            normalizer = Normalizer(tuple(candidate.radar_features)).fit(part.radar[train])
            metrics, meta = self._fit_members(part, normalizer, candidate,
                                              ensemble_members(candidate, int(part.role.size)))
            fitted.append((self.net_, self.normalizer_, self.arch_, metrics, meta))
            records.append(candidate_record(candidate, metrics, meta))
            log.info("fusion size candidate width %d: validation RMSE %.4f",
                     candidate.width, records[-1]["validation_rmse"])
        chosen = best([r["validation_rmse"] for r in records])
        net, normalizer, arch, metrics, meta = fitted[chosen]
        self._set_network(net, normalizer, config.radar_features, config.window, arch)
        self.metrics_, self.meta_ = metrics, meta
        self.meta_["model_size"] = size_record(device, records, chosen)

    def _fit_members(self, part: PixelSample, normalizer: Normalizer, config: TrainConfig,
                     members: int) -> tuple[dict, dict]:
        """Train ``members`` networks apart (seeds from ``member_seed``); set their mean as ``net_``.

        Returns:
            ``(metrics, meta)`` of the mean network, scored on the same held-out values as
            each member (``meta["ensemble"]`` keeps every member's score).
        """
        nets, scores, train_s = [], [], 0.0
        for member in range(members):
            member_config = replace(config, seed=member_seed(config.seed, member))
            seed_torch(member_config)  # before the network is built: its initial weights are seeded
            self.build(normalizer, n_times=part.times.size, config=config)
            metrics, meta = train_network(self.net_, normalizer, part, member_config,
                                          member=(member, members))
            nets.append(self.net_)
            scores.append(round(validation_score(metrics), 6))
            train_s += meta["seconds"]["train"]
        if members == 1:
            return metrics, meta
        self._set_network(mean_ensemble(nets), normalizer, config.radar_features, config.window,
                          {**self.arch_, "members": members})
        t0 = time.perf_counter()
        ndvi_in, held = holdout_inputs(part, config)
        metrics = validate(self.net_, normalizer, part, ndvi_in, held, config)
        meta["config"]["seed"] = config.seed
        meta["trained_on"]["members"] = members
        meta["seconds"] = {"train": round(train_s, 3), "validate": round(time.perf_counter() - t0, 3)}
        meta["ensemble"] = {"members": members,
                            "seeds": [member_seed(config.seed, m) for m in range(members)],
                            "member_validation_rmse": scores,
                            "validation_rmse": round(validation_score(metrics), 6)}
        return metrics, meta

    # ------------------------------------------------------------------------------ use
    def predict(self, cube: xr.Dataset, *, batch_pixels: int | None = None) -> xr.Dataset:
        """Add ``ndvi_fused`` to an in-memory cube: observed NDVI kept, gaps filled.

        All-zero NDVI periods (broken composites) count as gaps.

        Args:
            cube: Cube (block) ``(time, y, x)`` with ``vv``, ``vh``, ``ndvi`` and optionally
                ``ndvi_quality``.
            batch_pixels: Pixels per forward pass (default:
                :data:`~fusecube.fusion.neural.predict.BATCH_PIXELS`).

        Returns:
            The cube with ``ndvi_fused`` added.

        Raises:
            FusionModelError: The cube does not fit the model (:meth:`check_input`).
        """
        self.check_input(cube)
        return fill_block(cube, net=self.net_, normalizer=self.normalizer_,
                          radar_names=self.radar_features_, window=self.window_,
                          batch_pixels=batch_pixels)

    def check_input(self, cube: xr.Dataset) -> None:
        """Refuse a cube this model cannot fill: variables, time steps or periods differ.

        Raises:
            FusionModelError: Naming what differs and the fix.
        """
        source = getattr(self, "source_", None)
        check_input(cube, radar_features=self.radar_features_, arch=self.arch_,
                    periods=self.periods_,
                    name=f"Fusion model {source}" if source else "The fusion model")

    def predict_series(self, radar: np.ndarray, ndvi: np.ndarray, quality: np.ndarray | None,
                       times_days: np.ndarray, *, batch_pixels: int | None = None) -> np.ndarray:
        """Model NDVI at every step of ``(N, T)`` series (observed values are *not* kept here).

        Args:
            radar: ``(N, R, T)`` raw radar channels (``radar_features_``).
            ndvi: ``(N, T)`` observed NDVI, NaN missing.
            quality: ``(N, T)`` observation quality, or None for all clear.
            times_days: ``(T,)`` float days.
            batch_pixels: Pixels per forward pass.

        Returns:
            ``(N, T)`` float32 predictions clipped to the NDVI range [-1, 1].
        """
        return predict_series(self.net_, self.normalizer_, radar, ndvi, quality, times_days,
                              batch_pixels=batch_pixels)

    # ------------------------------------------------------------------------------ files
    def save(self, path: str | Path) -> Path:
        """Write the model (weights + JSON-able metadata) with ``torch.save``, atomically."""
        torch = require_torch()
        path = Path(path)
        state = {
            "format_version": FORMAT_VERSION,
            "state_dict": {k: v.detach().cpu() for k, v in self.net_.state_dict().items()},
            "radar_features": list(self.radar_features_),
            "calendar_features": list(CALENDAR_FEATURES),
            "optical_features": list(OPTICAL_FEATURES),
            "window": self.window_,
            "normalizer": self.normalizer_.to_dict(),
            "arch": self.arch_,
            "periods": self.periods_,
            "metrics": json.loads(json.dumps(self.metrics_, default=float)),
            "meta": json.loads(json.dumps(self.meta_, default=str)),
        }
        with atomic_path(path) as staged:
            torch.save(state, staged)
        return path

    @classmethod
    def load(cls, path: str | Path, *, device: str = "cpu") -> NeuralFusion:
        """Read a model written by :meth:`save`.

        The returned model's ``config`` carries the saved recipe (features, window,
        architecture) and default training options otherwise.

        Raises:
            InputFileError: The file is missing or not a fusion model.
            FusionModelError: The file records another feature set than this release builds,
                or its weights do not fit its features.
        """
        torch = require_torch()
        path = Path(path)
        if not path.exists():
            raise InputFileError(f"Fusion model {path} does not exist; train one with "
                                 "`fusecube fuse train CUBE --out model.pt`.")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for a corrupt file
            raise InputFileError(f"Fusion model {path} cannot be read ({type(exc).__name__}: "
                                 f"{exc}); train it again with `fusecube fuse train`.") from exc
        if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
            raise InputFileError(f"{path} is not a fusecube fusion model (format "
                                 f"{FORMAT_VERSION}); train one with `fusecube fuse train`.")
        check_state(state, path)
        arch = state["arch"]
        recipe = {"radar_features": tuple(state["radar_features"]), "window": state["window"],
                  "arch": arch["arch"], "width": arch["width"]}
        if "dilations" in arch:
            recipe["dilations"] = tuple(arch["dilations"])
        recipe["ensemble"] = int(arch.get("members", 1))
        model = cls(TrainConfig(**recipe))
        net = build_network(in_channels(state["radar_features"]), **arch)
        model._set_network(net, Normalizer.from_dict(state["normalizer"]),
                           state["radar_features"], state["window"], arch)
        load_weights(net, state["state_dict"], path, state["radar_features"])
        net.to(device).eval()
        model.metrics_, model.meta_ = state["metrics"], state["meta"]
        model.periods_, model.source_ = state.get("periods"), path
        return model
