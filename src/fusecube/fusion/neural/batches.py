"""Training batches of the fusion network: on the host (numpy) or built on the device (torch).

Every step hides random observations of a batch of training pixels and rebuilds their optical
channels (:func:`~fusecube.fusion.neural.features.optical_features`). Two ways to do it:

- :class:`HostBatches` (the CPU default): numpy on the host, exactly as fusecube always trained;
- :class:`DeviceBatches` (the CUDA default): everything that does not change is moved to the
  device once (normalised radar, calendar, observations, quality, weights), each epoch draws a
  random permutation *on the device*, and the hiding and optical channels are computed there
  with torch (:func:`optical_features_torch`, the same numbers as the numpy channels): no host
  work and no host→device copy per step.

Both run on any torch device, so the device path is tested on the CPU.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from fusecube.fusion.neural.features import (
    GAP_DAYS_SCALE,
    assemble,
    optical_features,
)
from fusecube.fusion.neural.network import require_torch

#: ``batching`` options of :class:`~fusecube.fusion.neural.train.TrainConfig`.
BATCHING = ("auto", "host", "device")


def resolve_batching(batching: str, device: str) -> str:
    """``auto`` → ``device`` on CUDA, ``host`` elsewhere (the CPU path fusecube always took)."""
    if batching == "auto":
        return "device" if str(device).startswith("cuda") else "host"
    if batching not in BATCHING:
        from fusecube.errors import ConfigError

        raise ConfigError(f"TrainConfig.batching {batching!r}: use one of {list(BATCHING)}.")
    return batching


@dataclass
class Batch:
    """One training step's tensors: input ``x (B, C, T)``, ``target (B, T)``, ``weight (B, T)``."""

    x: object
    target: object
    weight: object


@dataclass
class HideOptions:
    """How observations are hidden for training (see ``TrainConfig``)."""

    rate: tuple[float, float]
    spans: int
    max_span: int


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """Optimiser steps per pass over ``n_train`` pixels (at least one)."""
    return max(1, math.ceil(n_train / batch_size))


class HostBatches:
    """Batches built with numpy on the host and copied to ``device`` (pinned on CUDA).

    Args:
        radar_z: ``(N, R, T)`` normalised radar channels of the sample.
        calendar: ``(2, T)`` calendar channels.
        ndvi_in: ``(N, T)`` observations (held-out dates already NaN).
        quality: ``(N, T)`` observation quality.
        target_ok: ``(N, T)`` bool: values that may be targets.
        date_weight: ``(T,)`` loss weight per date.
        times_days: ``(T,)`` float days.
        train_idx: Indices of the training pixels.
        hide: Hiding options.
        rng: numpy generator (drives the order and the hiding).
        device: torch device of the returned tensors.
    """

    def __init__(self, *, radar_z, calendar, ndvi_in, quality, target_ok, date_weight,
                 times_days, train_idx, hide: HideOptions, rng: np.random.Generator,
                 device: str) -> None:
        self.radar_z, self.calendar, self.ndvi_in = radar_z, calendar, ndvi_in
        self.quality, self.target_ok, self.date_weight = quality, target_ok, date_weight
        self.times_days, self.train_idx, self.hide = times_days, train_idx, hide
        self.rng, self.device = rng, device
        self.torch = require_torch()

    def iterate(self, steps: int, batch_size: int) -> Iterator[Batch]:
        """``steps`` batches of ``batch_size`` pixels, epoch after epoch in random order."""
        rng, order = self.rng, np.zeros(0, int)
        for _ in range(steps):
            if order.size < batch_size:
                order = np.concatenate([order, rng.permutation(self.train_idx)])
                if order.size < batch_size:  # tiny inputs: draw with replacement
                    order = rng.choice(self.train_idx, size=batch_size)
            batch, order = order[:batch_size], order[batch_size:]
            valid = np.isfinite(self.ndvi_in[batch])
            hidden = hide_mask(valid, rng, rate=self.hide.rate, spans=self.hide.spans,
                               max_span=self.hide.max_span)
            shown = np.where(hidden, np.nan, self.ndvi_in[batch])
            x = assemble(self.radar_z[batch], self.calendar,
                         optical_features(shown, self.quality[batch], self.times_days))
            weight = (hidden & self.target_ok[batch]) * self.date_weight
            target = np.nan_to_num(self.ndvi_in[batch]).astype(np.float32)
            yield Batch(*(to_device(self.torch, a, self.device) for a in (x, target, weight)))


def to_device(torch, array: np.ndarray, device: str):
    """A numpy array as a tensor on ``device`` (pinned, non-blocking copy on CUDA)."""
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if str(device).startswith("cuda"):
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor if str(device) == "cpu" else tensor.to(device)


class DeviceBatches:
    """Batches cut and built on ``device`` from tensors moved there once.

    Same arguments as :class:`HostBatches`, except ``seed`` (a torch generator on the device
    drives the order and the hiding) instead of ``rng``.
    """

    def __init__(self, *, radar_z, calendar, ndvi_in, quality, target_ok, date_weight,
                 times_days, train_idx, hide: HideOptions, seed: int, device: str) -> None:
        torch = self.torch = require_torch()
        self.device, self.hide = device, hide

        def put(array, dtype=None):
            return torch.as_tensor(np.ascontiguousarray(array), dtype=dtype, device=device)

        self.radar_z = put(radar_z, torch.float32)
        self.calendar = put(calendar, torch.float32)
        self.ndvi_in = put(ndvi_in, torch.float32)
        self.quality = put(quality, torch.float32)
        self.target_ok = put(target_ok, torch.bool)
        self.date_weight = put(date_weight, torch.float32)
        days = np.asarray(times_days, np.float64)
        self.days = put(days - (days[0] if days.size else 0.0), torch.float32)
        self.train_idx = put(train_idx, torch.long)
        self.generator = torch.Generator(device=device).manual_seed(int(seed))

    def iterate(self, steps: int, batch_size: int) -> Iterator[Batch]:
        """``steps`` batches: a device permutation per epoch, indexed without leaving the device."""
        torch = self.torch
        n = int(self.train_idx.numel())
        order = self.train_idx[:0]
        for _ in range(steps):
            if order.numel() < batch_size:
                perm = torch.randperm(n, device=self.device, generator=self.generator)
                order = torch.cat([order, self.train_idx[perm]])
                if order.numel() < batch_size:  # tiny inputs: draw with replacement
                    pick = torch.randint(0, n, (batch_size,), device=self.device,
                                         generator=self.generator)
                    order = self.train_idx[pick]
            batch, order = order[:batch_size], order[batch_size:]
            yield self.build(batch)

    def build(self, batch) -> Batch:
        """The tensors of one step for the pixel indices ``batch`` (a device tensor)."""
        torch = self.torch
        ndvi = self.ndvi_in[batch]
        valid = torch.isfinite(ndvi)
        hidden = hide_mask_torch(valid, self.generator, self.hide)
        shown = torch.where(hidden, torch.full_like(ndvi, float("nan")), ndvi)
        optical = optical_features_torch(shown, self.quality[batch], self.days)
        radar = self.radar_z[batch]
        calendar = self.calendar[None].expand(radar.shape[0], -1, -1)
        x = torch.cat([radar, calendar, optical], dim=1)
        weight = (hidden & self.target_ok[batch]).float() * self.date_weight
        return Batch(x, torch.nan_to_num(ndvi), weight)


def hide_mask(valid: np.ndarray, rng: np.random.Generator, *, rate: tuple[float, float],
              spans: int, max_span: int) -> np.ndarray:
    """Random observations to hide ``(N, T)``: scattered dates plus contiguous spans per pixel."""
    n, n_t = valid.shape
    hide = rng.random((n, n_t)) < rng.uniform(*rate, size=(n, 1))
    steps = np.arange(n_t)[None, :]
    for _ in range(spans):  # a loop over spans, vectorised over pixels
        start = rng.integers(-max_span // 2, n_t, size=(n, 1))
        length = rng.integers(1, max_span + 1, size=(n, 1))
        hide |= (steps >= start) & (steps < start + length)
    return hide & valid


def hide_mask_torch(valid, generator, hide: HideOptions):
    """:func:`hide_mask` with torch on ``valid``'s device."""
    torch = require_torch()
    n, n_t = valid.shape
    device = valid.device
    low, high = hide.rate
    share = torch.rand((n, 1), device=device, generator=generator) * (high - low) + low
    hidden = torch.rand((n, n_t), device=device, generator=generator) < share
    steps = torch.arange(n_t, device=device)[None]
    for _ in range(hide.spans):  # a loop over spans, vectorised over pixels
        start = torch.randint(-hide.max_span // 2, n_t, (n, 1), device=device,
                              generator=generator)
        length = torch.randint(1, hide.max_span + 1, (n, 1), device=device, generator=generator)
        hidden |= (steps >= start) & (steps < start + length)
    return hidden & valid


def optical_features_torch(ndvi, quality, days):
    """The optical channels ``(N, 5, T)`` computed with torch, on the device of ``ndvi``.

    The same numbers as :func:`~fusecube.fusion.neural.features.optical_features`.

    Args:
        ndvi: ``(N, T)`` float tensor, NaN missing.
        quality: ``(N, T)`` observation quality (NaN counts as clear).
        days: ``(T,)`` float tensor of sample times in days (any origin).

    Returns:
        ``(N, 5, T)`` float32: observed, valid, quality, linear interpolation, scaled gap days.
    """
    torch = require_torch()
    valid = torch.isfinite(ndvi)
    zero = torch.zeros_like(ndvi)
    obs = torch.where(valid, ndvi, zero)
    qual = torch.where(valid, torch.nan_to_num(quality, nan=1.0).clamp(0, 1), zero)
    n_t = ndvi.shape[1]
    step = torch.arange(n_t, device=ndvi.device).expand_as(ndvi)
    prev = torch.where(valid, step, torch.full_like(step, -1)).cummax(dim=1).values
    nxt = torch.where(valid, step, torch.full_like(step, n_t)).flip(1).cummin(dim=1).values.flip(1)
    has_prev, has_next = prev >= 0, nxt < n_t
    t = days.to(torch.float32)
    t_prev, t_next = t[prev.clamp(min=0)], t[nxt.clamp(max=n_t - 1)]
    v_prev, v_next = obs.gather(1, prev.clamp(min=0)), obs.gather(1, nxt.clamp(max=n_t - 1))
    span = t_next - t_prev
    frac = torch.where(span > 0, (t[None] - t_prev) / torch.where(span > 0, span, 1.0), zero)
    both = v_prev + frac * (v_next - v_prev)
    interp = torch.where(has_prev & has_next, both,
                         torch.where(has_prev, v_prev, torch.where(has_next, v_next, zero)))
    interp = torch.where(valid, obs, interp)
    inf = torch.full_like(ndvi, float("inf"))
    since = torch.where(has_prev, t[None] - t_prev, inf)
    until = torch.where(has_next, t_next - t[None], inf)
    gaps = (torch.minimum(since, until) / GAP_DAYS_SCALE).clamp(max=2.0)
    return torch.stack([obs, valid.float(), qual, interp, gaps], dim=1).float()


def make_batches(mode: str, *, seed: int, rng: np.random.Generator, device: str, **data):
    """:class:`HostBatches` (``mode="host"``) or :class:`DeviceBatches` (``"device"``)."""
    if mode == "device":
        return DeviceBatches(seed=seed, device=device, **data)
    return HostBatches(rng=rng, device=device, **data)
