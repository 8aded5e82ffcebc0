"""Training the fusion network, masked-autoencoder style, with honest validation.

Clear optical observations of training pixels are hidden at random (single dates and long
spans, like cloudy seasons) and the network learns to predict them from the radar series and
the observations left. Validation uses pixels in held-out spatial blocks (with a buffer) and
whole held-out dates, and reports the linear and Whittaker-only baselines on the same values.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from fusecube.cube import DIMS, NDVI, NDVI_QUALITY, PADDY_MASK, TIME, VH, VV, X, Y
from fusecube.errors import FusionModelError
from fusecube.fusion.neural.batches import (
    HideOptions,
    hide_mask,
    make_batches,
    resolve_batching,
    steps_per_epoch,
)
from fusecube.fusion.neural.features import (
    RADAR_FEATURES,
    Normalizer,
    calendar_features,
    radar_features,
    screen_zero_periods,
)
from fusecube.fusion.neural.network import Architecture, require_torch, select_device
from fusecube.fusion.neural.predict import predict_series
from fusecube.fusion.neural.training_progress import report_step
from fusecube.fusion.neural.validation import baseline_fills, compare, wet_season
from fusecube.grid.periods import to_days
from fusecube.splits import SpatialSplit, hold_out_dates

if TYPE_CHECKING:  # pragma: no cover
    import xarray as xr

log = logging.getLogger(__name__)

#: ``ensemble="auto"``: a sample of fewer pixels than this (training and validation together:
#: the scene's own pixel count on scenes that small) trains several networks.
SMALL_SCENE_PIXELS = 10_000
#: ``ensemble="auto"``: how many networks a small scene trains and averages.
SMALL_SCENE_MEMBERS = 3


@dataclass(frozen=True)
class TrainConfig:
    """Options of :class:`~fusecube.fusion.neural.model.NeuralFusion` (how it learns).

    Attributes:
        arch: Network type, ``mlp``, ``conv`` or ``gru`` (see ``build_network``).
        width: Hidden units (``mlp``) or channels (``conv``, ``gru``).
        dilations: Dilation of each residual convolution (``conv``).
        window: Box-filter edge of the ``*_local`` radar channels (1 = no spatial context).
        radar_features: Radar channels used.
        epochs: Passes over the training pixels.
        min_steps: Fewest optimiser steps, whatever the number of pixels (tiny inputs).
        batch_size: Pixels per step.
        lr: Peak learning rate (one-cycle schedule).
        weight_decay: AdamW weight decay.
        max_train_pixels: Cap on training pixels sampled from the scene (bounds memory/time).
        max_val_pixels: Cap on validation pixels.
        sample_window: Edge of the square windows read from the scene to sample pixels.
        split: Spatial train/validation split.
        holdout_dates: Share of dates held out of training entirely.
        hide_rate: Range of the per-pixel share of observations hidden at random.
        spans: Contiguous spans hidden per pixel and step (like a cloudy season).
        max_span: Longest hidden span, in time steps.
        min_quality: Observations with lower quality (haze) are not used as targets.
        balance_dates: Loss weight per date ∝ (share of clear values) ** -balance_dates;
            0 weighs every target alike, 0.5 lifts the rarely clear (wet-season) dates.
        seed: Random seed of the model (training pixels drawn, training masks, weights). What is
            held out for validation (pixels, dates, spans) follows ``split.seed`` instead, so
            models of different seeds are scored on the same values.
        device: ``auto``, ``cpu`` or ``cuda``.
        threads: CPU threads for torch; ``None`` (default): every core this process may
            run on. A Dask worker (one core each) sets 1 for itself.
        batching: ``auto`` (``device`` on CUDA, ``host`` on CPU), ``host`` (numpy batches
            copied each step) or ``device`` (features held on the device, batches cut there;
            see :mod:`~fusecube.fusion.neural.batches`).
        compile: ``torch.compile`` mode for training (``off``, ``default``,
            ``reduce-overhead`` = CUDA graphs, ``max-autotune``); off by default.
        size: Model-size rule (:mod:`~fusecube.fusion.neural.sizing`): ``auto`` (on CUDA
            also train the large model and keep it when it validates better), ``compare``
            (the same on any device) or ``fixed`` (this configuration only).
        ensemble: Networks trained apart (seeds from :func:`member_seed`) and averaged; ``auto``
            (:func:`ensemble_members`): 3 when under 10,000 pixels are sampled, else 1.
    """

    arch: Architecture = "conv"
    width: int = 16
    dilations: tuple[int, ...] = (1, 2, 4, 8, 16, 1)
    window: int = 5
    radar_features: tuple[str, ...] = RADAR_FEATURES
    epochs: int = 10
    min_steps: int = 300
    batch_size: int = 512
    lr: float = 3e-3
    weight_decay: float = 1e-4
    max_train_pixels: int = 30_000
    max_val_pixels: int = 20_000
    sample_window: int = 64
    split: SpatialSplit = field(default_factory=SpatialSplit)
    holdout_dates: float = 0.1
    hide_rate: tuple[float, float] = (0.1, 0.5)
    spans: int = 2
    max_span: int = 12
    min_quality: float = 0.7
    balance_dates: float = 0.0
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    batching: str = "auto"
    compile: str = "off"
    size: str = "auto"
    ensemble: int | str = "auto"


def usable_cpus() -> int:
    """CPU threads for torch: ``OMP_NUM_THREADS`` when set, else the cores this process may run on."""
    requested = os.environ.get("OMP_NUM_THREADS", "")
    if requested.isdigit() and int(requested) > 0:
        return int(requested)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


@dataclass
class PixelSample:
    """Pixels drawn from a scene for training, as flat arrays.

    Attributes:
        radar: ``(N, R, T)`` raw radar channels.
        ndvi: ``(N, T)`` observed NDVI, NaN missing.
        quality: ``(N, T)`` observation quality.
        role: ``(N,)`` 0 = train, 1 = validation.
        paddy: ``(N,)`` bool or None.
        times: ``(T,)`` datetime64.
        windows: ``[y0, y1, x0, x1]`` of the windows read from the scene.
    """

    radar: np.ndarray
    ndvi: np.ndarray
    quality: np.ndarray
    role: np.ndarray
    paddy: np.ndarray | None
    times: np.ndarray
    windows: list[list[int]] = field(default_factory=list)


def sample_windows(shape: tuple[int, int], config: TrainConfig) -> list[tuple[slice, slice]]:
    """Square windows of the scene to read: the whole scene when small, else random tiles."""
    ny, nx = shape
    wanted = config.max_train_pixels / max(1e-6, 1 - config.split.val_fraction)
    if ny * nx <= 1.5 * wanted:
        return [(slice(0, ny), slice(0, nx))]
    size = config.sample_window
    tiles = [(slice(y0, min(y0 + size, ny)), slice(x0, min(x0 + size, nx)))
             for y0 in range(0, ny, size) for x0 in range(0, nx, size)]
    k = min(len(tiles), math.ceil(wanted / size**2))
    rng = np.random.default_rng([config.split.seed, 3])  # the split's: validation pixels lie here
    chosen = np.sort(rng.choice(len(tiles), size=k, replace=False))
    return [tiles[i] for i in chosen]


def _flat(var: np.ndarray) -> np.ndarray:
    """``(T, Y, X)`` → ``(Y*X, T)``."""
    return np.ascontiguousarray(var.reshape(var.shape[0], -1).T)


def sample_pixels(cube: xr.Dataset, config: TrainConfig) -> PixelSample:
    """Read a bounded sample of pixels (whole series) from a cube, split by spatial blocks.

    Args:
        cube: The cube (lazy or in memory) with ``vv``, ``vh``, ``ndvi`` and optionally
            ``ndvi_quality`` and ``paddy_mask``.
        config: Training options (sample size, windows, split).

    Returns:
        The sampled pixels with their role (train/validation).
    """
    shape = (cube.sizes[Y], cube.sizes[X])
    names = [n for n in (VV, VH, NDVI, NDVI_QUALITY, PADDY_MASK) if n in cube]
    windows = sample_windows(shape, config)
    parts = [cube[names].isel({Y: ys, X: xs}) for ys, xs in windows]
    if any(cube[n].chunks for n in names):  # lazy: read every window in one pass
        import dask

        parts = dask.compute(*parts)
    val_grid = config.split.val_blocks(shape)
    train_grid = config.split.train_pixels(shape)
    radar, ndvi, quality, role, paddy = [], [], [], [], []
    for (ys, xs), part in zip(windows, parts, strict=True):
        series = {n: part[n].transpose(*DIMS).values for n in (VV, VH, NDVI)}
        radar.append(radar_features(series, config.radar_features, window=config.window))
        ndvi.append(_flat(series[NDVI]))
        quality.append(_flat(part[NDVI_QUALITY].transpose(*DIMS).values) if NDVI_QUALITY in part
                       else np.ones_like(ndvi[-1]))
        is_val, is_train = val_grid[ys, xs].reshape(-1), train_grid[ys, xs].reshape(-1)
        role.append(np.where(is_val, 1, np.where(is_train, 0, -1)).astype(np.int8))
        if PADDY_MASK in part:
            paddy.append(part[PADDY_MASK].values.reshape(-1) > 0)
    role_all = np.concatenate(role)
    keep = role_all >= 0
    sample = PixelSample(
        radar=np.concatenate(radar)[keep], ndvi=screen_zero_periods(np.concatenate(ndvi))[keep],
        quality=np.concatenate(quality)[keep], role=role_all[keep],
        paddy=np.concatenate(paddy)[keep] if len(paddy) == len(windows) else None,
        times=cube[TIME].values,
        windows=[[w[0].start, w[0].stop, w[1].start, w[1].stop] for w in windows])
    return cap_sample(sample, config)


def cap_sample(sample: PixelSample, config: TrainConfig) -> PixelSample:
    """Subsample train/validation pixels to the configured caps.

    Training pixels follow ``config.seed``, validation pixels ``config.split.seed`` (models of
    any seed are scored on the same pixels).
    """
    chosen = []
    for role, cap, seed in ((0, config.max_train_pixels, config.seed),
                            (1, config.max_val_pixels, config.split.seed)):
        idx = np.flatnonzero(sample.role == role)
        if idx.size > cap:
            idx = np.sort(np.random.default_rng([seed, 4]).choice(idx, size=cap, replace=False))
        chosen.append(idx)
    sel = np.concatenate(chosen)
    return PixelSample(sample.radar[sel], sample.ndvi[sel], sample.quality[sel], sample.role[sel],
                       None if sample.paddy is None else sample.paddy[sel], sample.times,
                       sample.windows)


def choose_holdout_dates(ndvi: np.ndarray, times: np.ndarray, share: float,
                         rng: np.random.Generator) -> np.ndarray:
    """Indices of dates to hold out: observed dates, half from the wet season when possible."""
    observed = np.flatnonzero(np.isfinite(ndvi).mean(axis=0) > 0.02)
    k = int(round(share * times.size))
    if k == 0 or observed.size < 4:
        return np.zeros(0, int)
    wet = wet_season(times, ndvi)[observed]
    pools = (observed[wet], observed[~wet])
    return np.flatnonzero(hold_out_dates(times.size, n=min(k, times.size - 1), pools=pools, seed=rng))


def holdout_inputs(sample: PixelSample, config: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """The NDVI a model may see (held-out dates blanked) and the held-out date indices.

    Drawn from ``config.split.seed``: every model trained on ``sample`` (any seed, any member
    of an ensemble) holds out, and is scored on, the same dates.
    """
    train = training_pixels(sample)
    held = choose_holdout_dates(sample.ndvi[train], sample.times, config.holdout_dates,
                                np.random.default_rng([config.split.seed, 5]))
    ndvi_in = sample.ndvi.copy()
    ndvi_in[:, held] = np.nan  # held-out dates: never an input, never a target
    return ndvi_in, held


def ensemble_members(config: TrainConfig, n_pixels: int) -> int:
    """How many networks to train and average: ``config.ensemble``, or by the ``auto`` rule.

    ``auto``: :data:`SMALL_SCENE_MEMBERS` members when the sample holds fewer than
    :data:`SMALL_SCENE_PIXELS` pixels (``n_pixels``, training and validation together: each
    network trains in seconds there, and one network's result moves most with its seed), else
    one.

    Raises:
        FusionModelError: ``config.ensemble`` is neither ``auto`` nor a positive integer.
    """
    if config.ensemble == "auto":
        return SMALL_SCENE_MEMBERS if n_pixels < SMALL_SCENE_PIXELS else 1
    if isinstance(config.ensemble, int) and not isinstance(config.ensemble, bool) and config.ensemble >= 1:
        return config.ensemble
    raise FusionModelError(f"TrainConfig.ensemble {config.ensemble!r}: use 'auto' or a whole "
                           "number of networks (1 = a single network).")


def member_seed(seed: int, member: int) -> int:
    """Seed of ensemble member ``member``.

    ``seed`` itself for the first, else one drawn from ``(seed, member)``, so ensembles of
    different seeds share no member.
    """
    if member == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed), member]).generate_state(1)[0])


def seed_torch(config: TrainConfig):
    """Set torch's CPU threads and seed before a network is built: the same weights every run.

    Returns:
        The ``torch`` module.
    """
    torch = require_torch()
    torch.set_num_threads(max(1, config.threads or usable_cpus()))
    torch.manual_seed(config.seed)
    return torch


def training_pixels(sample: PixelSample) -> np.ndarray:
    """``(N,)`` bool: the sample's training pixels (role 0).

    Raises:
        FusionModelError: The spatial split left none.
    """
    train = sample.role == 0
    if not train.any():
        raise FusionModelError("No training pixels left after the spatial split; use a larger "
                               "scene or a smaller SpatialSplit.block / buffer.")
    return train


def train_network(net, normalizer: Normalizer, sample: PixelSample, config: TrainConfig, *,
                  fine_tuned: bool = False, member: tuple[int, int] = (0, 1)) -> tuple[dict, dict]:
    """Train ``net`` in place on already-sampled pixels, then score it on unseen ones.

    Pixels with role 1 are used only for validation. Without any, validation falls back to
    held-out dates on the training pixels, and ``metrics["pixels_seen"]`` says so.
    Call :func:`seed_torch` before building ``net``.

    Args:
        net: The network to train (fresh, or a copy of a trained one to fine-tune).
        normalizer: Radar statistics (fitted on the training pixels, or the fine-tuned
            model's).
        sample: The pixels.
        config: Training options.
        fine_tuned: Whether ``net`` started from a trained model (recorded in ``meta``).
        member: ``(index, count)`` of this network in an ensemble: progress counts the steps
            of all members, from 1 to their total.

    Returns:
        ``(metrics, meta)``: validation scores beside the baselines, and training details.
    """
    torch = require_torch()
    rng = np.random.default_rng([config.seed, 5])
    device = select_device(config.device)
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    started = time.perf_counter()
    times_days = to_days(sample.times)
    train = training_pixels(sample)
    ndvi_in, held = holdout_inputs(sample, config)
    target_ok = np.isfinite(ndvi_in) & (np.nan_to_num(sample.quality) >= config.min_quality)
    if not target_ok[train].any():
        raise FusionModelError("No clear optical observation among the training pixels: the "
                               "fusion model has nothing to learn from. Check the NDVI input "
                               "or lower TrainConfig.min_quality.")
    date_weight = _date_weights(target_ok[train], config.balance_dates)
    net = net.to(device).train()
    train_idx = np.flatnonzero(train)
    total_steps = max(config.min_steps,
                      config.epochs * steps_per_epoch(train_idx.size, config.batch_size))
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=total_steps,
                                                pct_start=0.15)
    use_amp = device.startswith("cuda")
    batching = resolve_batching(config.batching, device)
    batches = make_batches(
        batching, seed=config.seed, rng=rng, device=device, radar_z=normalizer.transform(sample.radar),
        calendar=calendar_features(times_days), ndvi_in=ndvi_in, quality=sample.quality,
        target_ok=target_ok, date_weight=date_weight, times_days=times_days, train_idx=train_idx,
        hide=HideOptions(config.hide_rate, config.spans, config.max_span))
    forward = compiled(net, config.compile)
    losses = []
    for done, step in enumerate(batches.iterate(total_steps, config.batch_size), 1):
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=use_amp):
            pred = forward(step.x)
        loss = (step.weight * (pred.float() - step.target) ** 2).sum() / step.weight.sum().clamp_min(1.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.detach())
        report_step(member[0] * total_steps + done, member[1] * total_steps,
                    losses[-1])  # throttled; free without a listener
    if use_amp:
        torch.cuda.synchronize()
    net.eval()
    train_s = time.perf_counter() - started
    t0 = time.perf_counter()
    metrics = validate(net, normalizer, sample, ndvi_in, held, config)
    meta = {
        "trained_on": {"train_pixels": int(train.sum()), "val_pixels": int((sample.role == 1).sum()),
                       "steps": total_steps,
                       "final_loss": float(np.mean([float(v) for v in losses[-20:]]))},
        "heldout_dates": [str(np.datetime_as_string(sample.times[i], unit="D")) for i in held],
        "config": {k: (list(v) if isinstance(v, tuple) else v)
                   for k, v in asdict(config).items()},
        "device": device, "batching": batching, "fine_tuned": fine_tuned,
        "seconds": {"train": round(train_s, 3), "validate": round(time.perf_counter() - t0, 3)},
        "versions": {"torch": torch.__version__, "fusecube": _version()},
    }
    return metrics, meta


def _date_weights(clear: np.ndarray, power: float) -> np.ndarray:
    """``(T,)`` float32 loss weight per date: ``(share of clear values) ** -power``, mean 1.

    Dates that clouds hide for most pixels (the wet season) give few targets; weighting them up
    keeps the loss from being all dry season.
    """
    share = clear.mean(axis=0)
    weight = np.where(share > 0, np.maximum(share, 1e-3) ** -power, 0.0)
    used = weight[share > 0]
    return (weight / (used.mean() if used.size else 1.0)).astype(np.float32)


def compiled(net, mode: str):
    """``net`` itself (``mode="off"``) or ``torch.compile(net, mode=...)`` sharing its weights."""
    if mode in ("off", "", None):
        return net
    torch = require_torch()
    return torch.compile(net, mode=None if mode == "default" else mode)


def _version() -> str:
    from fusecube import __version__

    return __version__


RADAR_SHUFFLED = "fusion:radar-shuffled"
"""The validation's radar check: the network fed radar shuffled between pixels."""


def validate(net, normalizer: Normalizer, sample: PixelSample, ndvi_in: np.ndarray,
             held: np.ndarray, config: TrainConfig) -> dict:
    """Scores on pixels and dates never used in training, fusion beside the baselines.

    Two tests on validation pixels (or, without any, on training pixels at held-out dates only):
    ``heldout_dates`` predicts the held-out dates from everything else; ``heldout_spans`` also
    hides random contiguous spans (long cloudy gaps) and predicts those clear values. The
    held-out pixels, dates and spans follow ``config.split.seed``, not ``config.seed``: models
    trained with different seeds are scored on the same values, so their scores compare.
    Each test also scores the network fed another validation pixel's radar
    (:data:`RADAR_SHUFFLED`, one random permutation): what it loses there is what S1 brings
    to it, rather than its model of the optical series.
    """
    times_days = to_days(sample.times)
    pixels = sample.role == 1
    pixels_seen = not pixels.any()
    if pixels_seen:
        pixels = sample.role == 0
    obs = sample.ndvi[pixels]
    clear = np.isfinite(obs) & (np.nan_to_num(sample.quality[pixels]) >= config.min_quality)
    wet = wet_season(sample.times, sample.ndvi)
    paddy = None if sample.paddy is None else sample.paddy[pixels]
    out: dict = {"pixels_seen": pixels_seen, "n_pixels": int(pixels.sum())}
    rng = np.random.default_rng([config.split.seed, 6])  # the split's, like the held-out dates
    inputs = ndvi_in[pixels]
    span_hide = hide_mask(np.isfinite(inputs), rng, rate=(0.0, 0.0), spans=1,
                          max_span=config.max_span)
    tests = {"heldout_dates": (inputs, np.isin(np.arange(obs.shape[1]), held)[None] & clear)}
    if not pixels_seen:
        tests["heldout_spans"] = (np.where(span_hide, np.nan, inputs), span_hide & clear)
    radar = sample.radar[pixels]
    donor = np.random.default_rng([config.split.seed, 7]).permutation(radar.shape[0])
    for name, (shown, scored) in tests.items():
        if not scored.any():
            continue
        preds = {"fusion": predict_series(net, normalizer, radar, shown,
                                          sample.quality[pixels], times_days),
                 RADAR_SHUFFLED: predict_series(net, normalizer, radar[donor], shown,
                                                sample.quality[pixels], times_days)}
        preds.update(baseline_fills(shown, times_days))
        target = np.where(scored, obs, np.nan)
        out[name] = compare(preds, target, wet=wet, paddy=paddy)
    return out
