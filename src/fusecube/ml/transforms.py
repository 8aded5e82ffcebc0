"""Compute on sample dicts: preprocessing, missing-value filling and flips/90° rotations.

A transform is called as ``transform(sample, rng)`` with a dict of numpy arrays whose last two
axes are ``(y, x)`` and a ``numpy.random.Generator``; it returns the (new) dict. Datasets hand
transforms a *copy* of what they read, and draw ``rng`` from ``(seed, epoch, index)`` so an
augmented sample is reproducible whatever the worker that produced it. Numpy only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from fusecube.ml.sar import SARPreprocessing

Sample = dict[str, np.ndarray]
#: A transform: ``(sample, rng) -> sample``.
Transform = Callable[[Sample, np.random.Generator], Sample]


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        """Transform ``sample`` (a new dict; arrays are not modified in place)."""
        for transform in self.transforms:
            sample = transform(sample, rng)
        return sample


@dataclass(frozen=True)
class FlipRotate:
    """Random horizontal/vertical flips and 90° rotations, the same for every key.

    All eight symmetries of the square are equally likely (with ``rotate`` and both flips);
    rotations need square arrays.
    """

    keys: tuple[str, ...] = ("image",)
    """Sample keys to transform together (e.g. ``("image", "mask", "target")``)."""
    hflip: bool = True
    """Allow flips along x."""
    vflip: bool = True
    """Allow flips along y."""
    rotate: bool = True
    """Allow rotations by k·90°."""

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        """Transform ``sample`` (a new dict; arrays are not modified in place)."""
        flip_x, flip_y = rng.random(2) < 0.5
        k = int(rng.integers(4)) if self.rotate else 0
        out = dict(sample)
        for key in self.keys:
            arr = sample[key]
            if self.hflip and flip_x:
                arr = arr[..., ::-1]
            if self.vflip and flip_y:
                arr = arr[..., ::-1, :]
            if k:
                arr = np.rot90(arr, k, axes=(-2, -1))
            out[key] = np.ascontiguousarray(arr)
        return out


@dataclass(frozen=True)
class Preprocess:
    """Apply stored SAR preprocessing (dB, clip, normalisation) to the channels of one key.

    For 4-D cube samples ``(band, time, y, x)`` set ``channel_axis=-4``.
    """

    params: SARPreprocessing
    """Fitted preprocessing (:func:`fusecube.ml.sar.fit_preprocessing`)."""
    key: str = "image"
    """The key to preprocess."""
    channel_axis: int = -3
    """Axis of the channels in the sample array."""

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        """Transform ``sample`` (a new dict; arrays are not modified in place)."""
        return {**sample, self.key: self.params.apply(sample[self.key],
                                                      channel_axis=self.channel_axis)}


@dataclass(frozen=True)
class FillMissing:
    """Replace NaN in ``key`` by ``value`` (after normalisation, 0 is the training mean/low)."""

    key: str = "image"
    """The key to fill."""
    value: float = 0.0
    """The fill value."""

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        """Transform ``sample`` (a new dict; arrays are not modified in place)."""
        arr = sample[self.key]
        return {**sample, self.key: np.where(np.isnan(arr), np.float32(self.value), arr)}
