"""Time series of a synthetic scene: rice calendars, NDVI curves and the water-cloud radar model.

Each rice season: flooding (low NDVI, specular radar), green-up, peak, senescence, harvest,
stubble. Radar follows a water-cloud model; VV carries more soil moisture than VH, so VH
tracks the canopy better.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fusecube.sources.synthetic.curves_compiled import paddy_curves_kernel
from fusecube.sources.synthetic.scene import MAX_SEASONS, OTHER_CROP, POND, SETTLEMENT, TREES, WATER
from fusecube.units import from_db, to_db


@dataclass
class PaddyParams:
    """Per-pixel rice calendar: transplanting and harvest days (N, K) and levels."""

    transplant: np.ndarray
    harvest: np.ndarray
    amplitude: np.ndarray
    fallow: np.ndarray
    flooded: np.ndarray


def paddy_calendar(n_seasons: np.ndarray, offset: np.ndarray, start_day: float,
                   rng: np.random.Generator) -> PaddyParams:
    """Transplanting/harvest days of each pixel's seasons (2 or 3 a year over two years)."""
    n = n_seasons.size
    jitter = rng.normal(0, 1.5, n)
    tp = np.full((n, MAX_SEASONS), np.nan)
    hv = np.full((n, MAX_SEASONS), np.nan)
    three = n_seasons == 3
    first3 = start_day + 7 + offset + jitter
    first2 = start_day + 19 + offset + jitter
    for k in range(6):  # three seasons a year: 118-day cycle, ~95 days in the field
        tp[three, k] = first3[three] + 118.0 * k
        hv[three, k] = tp[three, k] + 95.0 + rng.normal(0, 2, three.sum())
    for year in range(2):  # two seasons a year: wet (MT1) and first dry (MT2)
        for j, (shift, grow) in enumerate(((0.0, 105.0), (140.0, 100.0))):
            k = 2 * year + j
            tp[~three, k] = first2[~three] + 365.0 * year + shift
            hv[~three, k] = tp[~three, k] + grow + rng.normal(0, 2, (~three).sum())
    amplitude = rng.uniform(0.5, 0.62, (n, MAX_SEASONS))
    return PaddyParams(tp, hv, amplitude, rng.uniform(0.25, 0.32, n), rng.uniform(0.02, 0.08, n))


def paddy_curves(p: PaddyParams, days: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """NDVI and flood fraction (N, M) of rice pixels at ``days`` (M,).

    The formula, per pixel: ``flood = clip(sum_k sig((t - tp_k + 18) / 3) - sig((t - tp_k - 22) / 4), 0, 1)``,
    ``crop = sum_k a_k (sig((t - tp_k - 38) / 7) - sig((t - hv_k + 8) / 4))`` and
    ``ndvi = fallow - (fallow - flooded) flood + crop``, with ``sig`` the logistic saturated to
    exactly 0 / 1 beyond +-20 and absent seasons (NaN) adding nothing. The compiled kernel
    (:func:`~fusecube.sources.synthetic.curves_compiled.paddy_curves_kernel`) computes each
    season only over the days where it adds something.
    """
    days = np.asarray(days, np.float64)
    order = np.argsort(days, kind="stable")
    n, m = p.transplant.shape[0], days.size
    ndvi = np.empty((n, m))
    flood = np.empty((n, m))
    paddy_curves_kernel(np.ascontiguousarray(p.transplant, np.float64),
                        np.ascontiguousarray(p.harvest, np.float64),
                        np.ascontiguousarray(p.amplitude, np.float64),
                        np.ascontiguousarray(p.fallow, np.float64),
                        np.ascontiguousarray(p.flooded, np.float64),
                        np.ascontiguousarray(days[order]), ndvi, flood)
    if np.any(order != np.arange(m)):  # unsorted days: back to the caller's order
        inverse = np.empty_like(order)
        inverse[order] = np.arange(m)
        ndvi, flood = ndvi[:, inverse], flood[:, inverse]
    return ndvi, flood


def other_curves(cls: np.ndarray, days: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """NDVI (N, M) of the non-rice classes."""
    n = cls.size
    season = np.sin(2 * np.pi * (days[None, :] - 30) / 365.25)  # peaks ~ late Jan..Feb
    out = np.empty((n, days.size))
    level = rng.normal(0, 1, n)[:, None]
    out[:] = -0.05 + 0.03 * level  # water
    pond = cls == POND
    out[pond] = 0.03 + 0.03 * level[pond] + 0.08 * (season[0] < -0.7)  # drained in the dry peak
    set_ = cls == SETTLEMENT
    out[set_] = 0.22 + 0.04 * level[set_] + 0.03 * season
    tree = cls == TREES
    out[tree] = 0.78 + 0.03 * level[tree] + 0.04 * season
    crop = cls == OTHER_CROP
    peak = rng.uniform(0.6, 0.75, crop.sum())[:, None]
    out[crop] = 0.3 + 0.02 * level[crop] + (peak - 0.3) * np.clip(season, 0, None) ** 2
    return out


def _water_cloud(ndvi, flood, mv, roughness_db, cls):
    """Sigma0 VV and VH (linear) from canopy, flooding and soil moisture."""
    cos_t = np.cos(np.deg2rad(38.0))
    veg = np.clip((ndvi - 0.15) / 0.7, 0, 1)
    soil_vv = from_db(-13.0 + 15.0 * (mv - 0.25) + roughness_db)
    soil_vh = from_db(-21.0 + 8.0 * (mv - 0.25) + 0.5 * roughness_db)
    soil_vv = (1 - flood) * soil_vv + flood * from_db(-21.0)
    soil_vh = (1 - flood) * soil_vh + flood * from_db(-27.0)
    tau_vv = np.exp(-2 * 0.5 * veg / cos_t)
    tau_vh = np.exp(-2 * 0.3 * veg / cos_t)
    vv = 0.12 * veg * cos_t * (1 - tau_vv) + tau_vv * soil_vv
    vh = 0.035 * veg * cos_t * (1 - tau_vh) + tau_vh * soil_vh
    water = (cls == WATER) | (cls == POND)
    vv = np.where(water, from_db(-21.0 + 2.0 * roughness_db), vv)
    vh = np.where(water, from_db(-27.0 + roughness_db), vh)
    urban = cls == SETTLEMENT
    vv = np.where(urban, from_db(-6.0 + roughness_db), vv)
    vh = np.where(urban, from_db(-13.0 + roughness_db), vh)
    return vv, vh


def decouple_radar(vv: np.ndarray, vh: np.ndarray, skill: float,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Radar that follows each pixel's own land and canopy only as much as ``skill`` says.

    Each pixel ``p`` gets a donor ``q``, another pixel drawn at random (a permutation of the
    tile). Write a pixel's dB series as ``m + n u(t)``: its mean level ``m`` (which tells land
    classes apart), the size ``n`` of its variation (the norm of the anomaly) and the unit-norm
    shape ``u`` of the water-cloud anomaly (canopy plus flooding plus soil moisture). With
    ``w = sqrt(s)`` the series becomes ``m' + n' (w u_p + sqrt(1 - s) z)``, where level and size
    move from the donor's to the pixel's own, ``m' = M + w (m_p - M) + sqrt(1 - s) (m_q - M)``
    (``M``: the tile's mean level, so the spread of levels is kept and they correlate with the
    pixels' own by ``sqrt(s)``) and ``n' = n_q + w (n_p - n_q)``, and ``z`` is a
    phase-randomised surrogate of the donor's anomaly (its power spectrum, hence its
    autocorrelation, with random Fourier phases; the pixel's own when the donor is constant),
    made orthogonal to ``u_p`` and of unit norm. So the variation correlates with the pixel's
    own anomaly by exactly ``sqrt(s)``. At ``s = 1`` nothing changes; at ``s = 0`` a pixel's
    radar is a random pixel's level and variation size with a surrogate timing: it says nothing
    about the pixel's own class or crop (no level, no variance, no timing), while the scene
    keeps its spread of levels, its variation sizes and its autocorrelations. VV and VH share
    the donor and the phases, so their cross-correlation is kept; the surrogates are
    independent between pixels.

    Args:
        vv: Sigma0 VV ``(N, T)``, linear, before speckle.
        vh: Sigma0 VH ``(N, T)``, linear, before speckle.
        skill: 1 keeps the radar as it is, 0 leaves no link to the pixel.
        rng: Generator of the donors and random phases (a stream of its own).

    Returns:
        ``(vv, vh)`` linear, same shapes.
    """
    n, n_t = vv.shape
    donor = rng.permutation(n)
    phase = np.exp(1j * rng.uniform(0.0, 2 * np.pi, (n, n_t // 2 + 1)))
    phase[:, 0] = 0.0  # the surrogate is an anomaly: no mean
    if n_t % 2 == 0:  # the Nyquist term of a real series is real: a random sign
        phase[:, -1] = np.where(phase[:, -1].real < 0, -1.0, 1.0)
    w = np.sqrt(skill)
    out = []
    for linear in (vv, vh):
        db = to_db(np.asarray(linear, np.float64))
        mean = db.mean(axis=1, keepdims=True)
        a = db - mean
        size = np.sqrt((a * a).sum(axis=1, keepdims=True))
        with np.errstate(invalid="ignore", divide="ignore"):
            u = np.where(size > 0, a / size, 0.0)
            source = np.where(size[donor] > 0, a[donor], a)  # a constant donor: the pixel's own
            z = np.fft.irfft(np.fft.rfft(source, axis=1) * phase, n=n_t, axis=1)
            z = z - (z * u).sum(axis=1, keepdims=True) * u
            z = np.nan_to_num(z / np.sqrt((z * z).sum(axis=1, keepdims=True)))
        centre = mean.mean()
        level = centre + w * (mean - centre) + np.sqrt(1.0 - skill) * (mean[donor] - centre)
        size = size[donor] + w * (size - size[donor])
        out.append(from_db(level + size * (w * u + np.sqrt(1.0 - skill) * z)))
    return out[0], out[1]
