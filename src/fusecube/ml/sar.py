"""SAR preprocessing for ML: invalid values, dB, clip bounds and normalisation (numpy only).

Statistics (clip bounds, mean/std) are *fitted* on training data only and stored in a
:class:`SARPreprocessing` that round-trips through JSON, so validation, test and serving use
exactly the training parameters. Fitting streams over shards: pass a sequence of arrays (for
example memory-mapped shards) and no more than one array is held at a time.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np

from fusecube.errors import PatchError
from fusecube.units import to_db

log = logging.getLogger(__name__)

FillStrategy = Literal["nan", "constant", "median"]
ClipMethod = Literal["percentile", "fixed", "sigma"]
NormMethod = Literal["minmax", "zscore", "none"]

#: Histogram resolution of the streaming percentile (error <= 2 * (max - min) / bins).
PERCENTILE_BINS = 1 << 16


@dataclass(frozen=True)
class InvalidCounts:
    """How many values of each invalid kind :func:`handle_invalid_values` found."""

    nan: int = 0
    """NaN values."""
    posinf: int = 0
    """+inf values."""
    neginf: int = 0
    """-inf values."""
    nonpositive: int = 0
    """Finite values <= 0 (invalid for linear backscatter only)."""
    nodata: int = 0
    """Values equal to the nodata value."""
    filled: int = 0
    """Invalid values replaced by the fill strategy (NaN fill counts as filled)."""
    unfillable: int = 0
    """Invalid values left NaN because their image had no valid value to take a median of."""

    @property
    def invalid(self) -> int:
        """All invalid values (each value counted once, in the first kind that matched)."""
        return self.nan + self.posinf + self.neginf + self.nonpositive + self.nodata

    def __add__(self, other: InvalidCounts) -> InvalidCounts:
        return InvalidCounts(**{k: v + getattr(other, k) for k, v in asdict(self).items()})

    def to_dict(self) -> dict[str, int]:
        """Counts as a JSON-ready dict, with the total under ``invalid``."""
        return {**asdict(self), "invalid": self.invalid}


def invalid_mask(
    values: np.ndarray, *, linear: bool = True, nodata: float | None = None
) -> np.ndarray:
    """Boolean mask of invalid values: NaN, ±inf, ``<= 0`` when ``linear``, ``== nodata``."""
    bad = ~np.isfinite(values)
    if linear:
        with np.errstate(invalid="ignore"):
            bad |= values <= 0
    if nodata is not None:
        bad |= values == nodata
    return bad


def handle_invalid_values(
    values: np.ndarray,
    *,
    strategy: FillStrategy = "nan",
    fill_value: float = 0.0,
    nodata: float | None = None,
    linear: bool = True,
) -> tuple[np.ndarray, InvalidCounts]:
    """Replace invalid values (NaN, ±inf, ``<= 0`` in linear units, nodata) by a fill.

    Args:
        values: Images ``(..., H, W)``; not modified.
        strategy: ``"nan"`` (mark missing), ``"constant"`` (``fill_value``) or ``"median"``
            (median of the valid values of the same image, i.e. over the last two axes; an
            image with no valid value stays NaN and is counted as ``unfillable``).
        fill_value: Value for ``"constant"``.
        nodata: A nodata sentinel to treat as invalid.
        linear: Values are linear backscatter, so ``<= 0`` is invalid (set False for dB or
            NDVI).

    Returns:
        A float32 copy with invalid values filled, and the counts per kind.
    """
    if strategy not in ("nan", "constant", "median"):
        raise PatchError(f"Unknown fill strategy {strategy!r}; use 'nan', 'constant' or 'median'.")
    out = np.array(values, dtype=np.float32, copy=True)
    nan = np.isnan(out)
    posinf = np.isposinf(out)
    neginf = np.isneginf(out)
    seen = nan | posinf | neginf
    nonpos = np.zeros_like(seen)
    if linear:
        with np.errstate(invalid="ignore"):
            nonpos = (out <= 0) & ~seen
        seen |= nonpos
    nod = (out == nodata) & ~seen if nodata is not None else np.zeros_like(seen)
    bad = seen | nod
    n_bad = int(bad.sum())
    unfillable = 0
    if n_bad:
        out[bad] = np.nan
        if strategy == "constant":
            out[bad] = fill_value
        elif strategy == "median" and out.ndim >= 2:
            with np.errstate(all="ignore"), _quiet_nanmedian():
                medians = np.nanmedian(out, axis=(-2, -1), keepdims=True)
            out = np.where(bad, medians, out).astype(np.float32, copy=False)
            unfillable = int(np.isnan(out).sum())
        elif strategy == "median":
            out[bad] = np.nanmedian(out) if (~bad).any() else np.nan
            unfillable = int(np.isnan(out).sum())
    counts = InvalidCounts(
        nan=int(nan.sum()), posinf=int(posinf.sum()), neginf=int(neginf.sum()),
        nonpositive=int(nonpos.sum()), nodata=int(nod.sum()),
        filled=n_bad - unfillable, unfillable=unfillable,
    )
    return out, counts


class _quiet_nanmedian:
    """Silence numpy's "All-NaN slice" RuntimeWarning (those images are counted instead)."""

    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


@dataclass(frozen=True)
class ClipBounds:
    """Per-channel clip bounds and how they were obtained."""

    method: ClipMethod
    """``percentile``, ``fixed`` or ``sigma``."""
    low: tuple[float, ...]
    """Lower bound per channel."""
    high: tuple[float, ...]
    """Upper bound per channel."""
    params: dict = field(default_factory=dict)
    """The method's parameters (``low_pct``/``high_pct``, ``k``, ...)."""

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return {"method": self.method, "low": list(self.low), "high": list(self.high),
                "params": dict(self.params)}

    @classmethod
    def from_dict(cls, data: dict) -> ClipBounds:
        """Inverse of :meth:`to_dict`."""
        return cls(data["method"], tuple(data["low"]), tuple(data["high"]), dict(data["params"]))


@dataclass
class _Moments:
    """Streaming per-channel count/sum/sum of squares/min/max (float64, finite values only)."""

    count: np.ndarray
    total: np.ndarray
    total_sq: np.ndarray
    low: np.ndarray
    high: np.ndarray

    @classmethod
    def empty(cls, channels: int) -> _Moments:
        z = np.zeros(channels)
        return cls(z.copy(), z.copy(), z.copy(), np.full(channels, np.inf),
                   np.full(channels, -np.inf))

    def update(self, flat: np.ndarray, ok: np.ndarray) -> None:
        if ok.all():  # the usual case after filling: no masked copies
            vals, low, high = flat, flat.min(axis=1), flat.max(axis=1)
        else:
            vals = np.where(ok, flat, np.float32(0))
            low = np.where(ok, flat, np.inf).min(axis=1, initial=np.inf)
            high = np.where(ok, flat, -np.inf).max(axis=1, initial=-np.inf)
        self.count += ok.sum(axis=1)
        self.total += vals.sum(axis=1, dtype=np.float64)
        self.total_sq += np.square(vals).sum(axis=1, dtype=np.float64)
        self.low = np.minimum(self.low, low)
        self.high = np.maximum(self.high, high)

    @property
    def mean(self) -> np.ndarray:
        return self.total / np.maximum(self.count, 1)

    @property
    def std(self) -> np.ndarray:
        var = self.total_sq / np.maximum(self.count, 1) - self.mean**2
        return np.sqrt(np.maximum(var, 0.0))


def _chunks(images: np.ndarray | Sequence[np.ndarray]) -> Sequence[np.ndarray]:
    """A re-iterable sequence of ``(N, C, H, W)`` arrays (one array is a one-item sequence)."""
    if isinstance(images, np.ndarray):
        return [images]
    if iter(images) is images:
        raise PatchError(
            "Streaming statistics need two passes, so `images` must be an array or a "
            "re-iterable sequence of arrays (a list of shards), not a one-shot iterator."
        )
    return images


def _flat(chunk: np.ndarray, transform) -> tuple[np.ndarray, np.ndarray]:
    """``(N, C, ...)`` → per-channel rows ``(C, M)`` after ``transform`` and a finite mask."""
    arr = np.asarray(chunk, dtype=np.float32)
    if arr.ndim < 2:
        raise PatchError(f"Images must be shaped (N, C, H, W); got shape {arr.shape}.")
    if transform is not None:
        arr = transform(arr)
    flat = np.moveaxis(arr, 1, 0).reshape(arr.shape[1], -1)
    return flat, np.isfinite(flat)


def _moments(chunks: Iterable[np.ndarray], transform=None, clip=None) -> _Moments:
    moments = None
    for chunk in chunks:
        flat, ok = _flat(chunk, transform)
        if clip is not None:
            flat = np.clip(flat, clip[0][:, None], clip[1][:, None])
        if moments is None:
            moments = _Moments.empty(flat.shape[0])
        moments.update(flat, ok)
    if moments is None or not moments.count.all():
        raise PatchError(
            "No finite training values to compute statistics from; check that the training "
            "split is not empty and that invalid values were handled (handle_invalid_values)."
        )
    return moments


def _streaming_percentiles(
    chunks: Iterable[np.ndarray], low: np.ndarray, high: np.ndarray, qs: Sequence[float],
    transform=None, bins: int = PERCENTILE_BINS,
) -> np.ndarray:
    """Per-channel percentiles from a fixed-range histogram (one more pass over the data)."""
    channels = low.size
    counts = np.zeros(channels * bins, dtype=np.int64)
    width = np.where(high > low, (high - low) / bins, 1.0)
    low32 = low.astype(np.float32)[:, None]
    inv32 = (1.0 / width).astype(np.float32)[:, None]
    offsets = (np.arange(channels) * bins)[:, None]
    for chunk in chunks:
        flat, ok = _flat(chunk, transform)
        scaled = (flat - low32) * inv32  # float32: a value may land one bin off
        all_ok = bool(ok.all())
        if not all_ok:
            scaled[~ok] = 0
        np.clip(scaled, 0, bins - 1, out=scaled)
        idx = scaled.astype(np.intp)
        if channels > 1:
            idx += offsets
        counts += np.bincount(idx.ravel() if all_ok else idx[ok], minlength=channels * bins)
    cdf = np.cumsum(counts.reshape(channels, bins), axis=1)
    total = cdf[:, -1]
    out = np.empty((len(qs), channels))
    for i, q in enumerate(qs):
        # 1-based rank of numpy's linear-interpolation percentile, (n - 1)·q + 1
        target = q / 100.0 * (total - 1) + 1
        b = np.array([np.searchsorted(cdf[c], target[c]) for c in range(channels)])
        b = np.minimum(b, bins - 1)
        below = np.where(b > 0, cdf[np.arange(channels), b - 1], 0)
        in_bin = np.maximum(cdf[np.arange(channels), b] - below, 1)
        # values assumed spread evenly within their bin
        frac = np.clip((target - below - 0.5) / in_bin, 0.0, 1.0)
        out[i] = low + (b + frac) * width
    return out


def compute_clip_bounds(
    images: np.ndarray | Sequence[np.ndarray],
    method: ClipMethod = "percentile",
    *,
    low_pct: float = 1.0,
    high_pct: float = 99.0,
    low: float | Sequence[float] | None = None,
    high: float | Sequence[float] | None = None,
    k: float = 3.0,
    transform=None,
) -> ClipBounds:
    """Per-channel clip bounds of training images, exact in memory, streaming over shards.

    Args:
        images: One ``(N, C, H, W)`` array (exact percentiles) or a re-iterable sequence of
            them, e.g. memory-mapped shards (two passes; percentiles from a 65536-bin
            histogram, within two bins, ``2 * (max - min) / 65536``, of numpy's). Only finite
            values count.
            Pass training data only.
        method: ``percentile`` (``low_pct``, ``high_pct``), ``fixed`` (``low``, ``high``) or
            ``sigma`` (mean ± ``k``·std).
        low_pct: Lower percentile for ``percentile``.
        high_pct: Upper percentile for ``percentile``.
        low: Lower bound for ``fixed`` (a number or one per channel).
        high: Upper bound for ``fixed``.
        k: Number of standard deviations for ``sigma``.
        transform: Applied to each chunk first (e.g. :func:`fusecube.units.to_db`).

    Returns:
        The bounds.
    """
    if method == "fixed":
        if low is None or high is None:
            raise PatchError("method='fixed' needs both low and high (e.g. low=-25, high=0 in dB).")
        lo, hi = np.atleast_1d(np.asarray(low, float)), np.atleast_1d(np.asarray(high, float))
        if np.any(lo >= hi):
            raise PatchError(f"Fixed clip bounds need low < high; got low={low}, high={high}.")
        return ClipBounds("fixed", tuple(lo.tolist()), tuple(hi.tolist()),
                          {"low": low, "high": high})
    chunks = _chunks(images)
    if method == "percentile":
        if not 0.0 <= low_pct < high_pct <= 100.0:
            raise PatchError(
                f"Percentiles need 0 <= low_pct < high_pct <= 100; got {low_pct}, {high_pct}.")
        params = {"low_pct": low_pct, "high_pct": high_pct}
        if isinstance(images, np.ndarray):
            flat, ok = _flat(images, transform)
            if not ok.any(axis=1).all():
                raise PatchError(
                    "A channel has no finite training values; cannot compute percentiles.")
            vals = np.where(ok, flat, np.nan)
            lo, hi = np.nanpercentile(vals, [low_pct, high_pct], axis=1)
            params["exact"] = True
        else:
            m = _moments(chunks, transform)
            lo, hi = _streaming_percentiles(chunks, m.low, m.high, [low_pct, high_pct], transform)
            params.update(exact=False, bins=PERCENTILE_BINS)
    elif method == "sigma":
        m = _moments(chunks, transform)
        lo, hi = m.mean - k * m.std, m.mean + k * m.std
        params = {"k": k, "mean": m.mean.tolist(), "std": m.std.tolist()}
    else:
        raise PatchError(f"Unknown clip method {method!r}; use 'percentile', 'fixed' or 'sigma'.")
    return ClipBounds(method, tuple(float(v) for v in lo), tuple(float(v) for v in hi), params)


@dataclass(frozen=True)
class SARPreprocessing:
    """Stored preprocessing: optional dB, clip, then normalisation, per channel.

    Fit with :func:`fit_preprocessing` on training data; apply with :meth:`apply` anywhere.
    """

    db: bool = True
    """Convert linear values to dB first."""
    clip: ClipBounds | None = None
    """Clip bounds (in the units after ``db``)."""
    norm: NormMethod = "minmax"
    """``minmax`` maps the clip range to [0, 1]; ``zscore`` uses ``mean``/``std``."""
    mean: tuple[float, ...] = ()
    """Per-channel mean of the clipped training values (``zscore``)."""
    std: tuple[float, ...] = ()
    """Per-channel standard deviation of the clipped training values (``zscore``)."""

    def apply(self, images: np.ndarray, *, channel_axis: int = -3) -> np.ndarray:
        """Preprocess ``images`` (channels on ``channel_axis``; NaN stays NaN); returns float32."""
        out = np.asarray(images, dtype=np.float32)
        if self.db:
            out = to_db(out)
        shape = [1] * out.ndim
        shape[channel_axis] = -1
        if self.clip is not None:
            lo = np.asarray(self.clip.low, np.float32).reshape(shape)
            hi = np.asarray(self.clip.high, np.float32).reshape(shape)
            out = np.clip(out, lo, hi)
        if self.norm == "minmax":
            if self.clip is None:
                raise PatchError("norm='minmax' needs clip bounds; fit with a clip method.")
            out = (out - lo) / np.maximum(hi - lo, np.float32(1e-12))
        elif self.norm == "zscore":
            mean = np.asarray(self.mean, np.float32).reshape(shape)
            std = np.asarray(self.std, np.float32).reshape(shape)
            out = (out - mean) / np.maximum(std, np.float32(1e-12))
        return out.astype(np.float32, copy=False)

    def to_dict(self) -> dict:
        """JSON-ready dict (round-trips through :meth:`from_dict`)."""
        return {"db": self.db, "clip": self.clip.to_dict() if self.clip else None,
                "norm": self.norm, "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, data: dict) -> SARPreprocessing:
        """Inverse of :meth:`to_dict`."""
        clip = ClipBounds.from_dict(data["clip"]) if data.get("clip") else None
        return cls(bool(data["db"]), clip, data["norm"], tuple(data["mean"]), tuple(data["std"]))


def fit_preprocessing(
    images: np.ndarray | Sequence[np.ndarray],
    *,
    db: bool = True,
    clip_method: ClipMethod | None = "percentile",
    norm: NormMethod = "minmax",
    **clip_options,
) -> SARPreprocessing:
    """Fit clip bounds (and z-score statistics) on training images, streaming over shards.

    Args:
        images: Training images ``(N, C, H, W)`` or a re-iterable sequence of such arrays.
        db: Convert to dB before computing the statistics (and when applying).
        clip_method: ``percentile``, ``fixed``, ``sigma`` or None (no clipping).
        norm: ``minmax`` (clip range → [0, 1]), ``zscore`` or ``none``.
        **clip_options: Passed to :func:`compute_clip_bounds` (``low_pct``, ``k``, ...).

    Returns:
        The fitted preprocessing.
    """
    transform = to_db if db else None
    clip = None
    if clip_method is not None:
        clip = compute_clip_bounds(images, clip_method, transform=transform, **clip_options)
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    if norm == "zscore":
        bounds = None if clip is None else (np.asarray(clip.low), np.asarray(clip.high))
        m = _moments(_chunks(images), transform, bounds)
        mean, std = tuple(m.mean.tolist()), tuple(m.std.tolist())
    elif norm == "minmax" and clip is None:
        raise PatchError("norm='minmax' needs a clip method; pass clip_method='percentile'.")
    params = SARPreprocessing(db=db, clip=clip, norm=norm, mean=mean, std=std)
    log.info("fitted SAR preprocessing %s", params.to_dict())
    return params
