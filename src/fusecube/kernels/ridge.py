"""Compiled gap-fill of the ridge fusion's blend stage: features and prediction in one pass.

:func:`fusecube.fusion.ridge.features.blend_features` builds the blend features as ``(N, T)``
numpy arrays, which is what fitting needs (rows gathered at the hidden samples). Filling a
whole scene only needs their weighted sum at the missing samples; computing it per pixel in a
compiled loop (interpolation, distance to the nearest observation, the products) skips a
dozen full-size temporaries and is several times faster. The features and their order are
those of ``blend_features`` (a test checks that both give the same prediction).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from fusecube.fusion.neural.features import GAP_DAYS_SCALE

MAX_GAP = 2.0
"""Cap of the scaled distance to the nearest observation (as in ``blend_features``)."""


@njit(cache=True, nogil=True)
def blend_rows(ndvi, radar_ndvi, times, coef, intercept, out):
    """Fill the missing samples of ``(N, T)`` series with the blend stage's prediction.

    Args:
        ndvi: ``(N, T)`` float32 NDVI, NaN where missing.
        radar_ndvi: ``(N, T)`` float32 stage-1 radar NDVI.
        times: ``(T,)`` float64 sample times in days.
        coef: ``(11,)`` weights of the blend features, in ``blend_features`` order.
        intercept: The blend stage's constant.
        out: ``(N, T)`` float32 output: observations kept, the rest predicted and clipped to
            [-1, 1].
    """
    n, n_t = ndvi.shape
    prev = np.empty(n_t, np.int64)
    nxt = np.empty(n_t, np.int64)
    for p in range(n):
        count = 0
        total = 0.0
        last = -1
        for i in range(n_t):
            if np.isfinite(ndvi[p, i]):
                last = i
                count += 1
                total += ndvi[p, i]
            prev[i] = last
        following = -1
        for i in range(n_t - 1, -1, -1):
            if np.isfinite(ndvi[p, i]):
                following = i
            nxt[i] = following
        mean = total / count if count > 0 else 0.0
        for i in range(n_t):
            value = ndvi[p, i]
            if np.isfinite(value):
                out[p, i] = value
                continue
            radar = radar_ndvi[p, i]
            lo, hi = prev[i], nxt[i]
            if lo < 0 and hi < 0:  # never observed: no interpolation, the largest distance
                interp = 0.0
                resid = 0.0
                gap = MAX_GAP
            else:
                if lo < 0:
                    lo = hi
                if hi < 0:
                    hi = lo
                span = times[hi] - times[lo]
                frac = (times[i] - times[lo]) / span if span > 0 else 0.0
                interp = ndvi[p, lo] + frac * (ndvi[p, hi] - ndvi[p, lo])
                r_lo = ndvi[p, lo] - radar_ndvi[p, lo]
                resid = r_lo + frac * (ndvi[p, hi] - radar_ndvi[p, hi] - r_lo)
                days = np.inf
                if prev[i] >= 0:
                    days = times[i] - times[prev[i]]
                if nxt[i] >= 0:
                    days = min(days, times[nxt[i]] - times[i])
                gap = min(days / GAP_DAYS_SCALE, MAX_GAP)
            pred = (intercept + coef[0] * radar + coef[1] * interp + coef[2] * resid
                    + coef[3] * gap + coef[4] * gap * interp + coef[5] * gap * resid
                    + coef[6] * gap * radar + coef[7] * mean + coef[8] * mean * radar
                    + coef[9] * gap * gap + coef[10] * gap * gap * resid)
            out[p, i] = min(max(pred, -1.0), 1.0)


PIXEL_BLOCK = 256
"""Pixels computed side by side by :func:`radar_grid` (its per-date loops run over them)."""


@njit(cache=True, nogil=True, error_model="numpy")
def _lookup(vv, vh, edges, bins, table):
    """Table NDVI of the (VV, VH) bin of one sample (NaN backscatter: the lowest bin)."""
    vv = vv if np.isfinite(vv) else edges[0]
    vh = vh if np.isfinite(vh) else edges[2]
    iv = min(max(int((vv - edges[0]) * (bins / (edges[1] - edges[0]))), 0), bins - 1)
    ih = min(max(int((vh - edges[2]) * (bins / (edges[3] - edges[2]))), 0), bins - 1)
    return table[iv * bins + ih]


@njit(cache=True, nogil=True, error_model="numpy")
def radar_grid(vv_grid, vh_grid, edges, bins, table, calendar, coef, intercept, reach, out):
    """Stage-1 radar NDVI of a scene: table lookup, lags and dot product in one pass.

    The backscatter comes as ``(T, N)`` grids (the cube's own layout: no transposition);
    :data:`PIXEL_BLOCK` pixels are computed side by side, so every loop over them runs over
    contiguous memory and vectorises. Each sample's sum is accumulated in the order of the
    ``radar_features`` columns.

    Args:
        vv_grid: ``(T, N)`` float32 box-filtered VV in dB.
        vh_grid: ``(T, N)`` float32 box-filtered VH in dB.
        edges: ``(4,)`` the table's fitted ``(low_vv, high_vv, low_vh, high_vh)``.
        bins: Bins per axis of the table.
        table: ``(bins * bins,)`` NDVI per bin.
        calendar: ``(2, T)`` day-of-year sin and cos.
        coef: Weights in ``radar_features`` order: table, VV, VH, VH-VV at each lag
            ``-reach..reach``, then sin, cos, table·sin, table·cos.
        intercept: The radar stage's constant.
        reach: Largest lag.
        out: ``(N, T)`` float32 output (pixel-major, as the blend stage reads it).
    """
    n_t, n = vv_grid.shape
    taps = 2 * reach + 1
    base = 4 * taps
    nb = PIXEL_BLOCK
    looked_up = np.empty((n_t, nb))
    acc = np.empty(nb)
    for start in range(0, n, nb):
        m = min(nb, n - start)
        for i in range(n_t):
            for b in range(m):
                looked_up[i, b] = _lookup(vv_grid[i, start + b], vh_grid[i, start + b],
                                          edges, bins, table)
        for i in range(n_t):
            for b in range(m):
                acc[b] = intercept
            for k in range(taps):
                at = min(max(i + k - reach, 0), n_t - 1)
                c_table, c_vv = coef[k], coef[taps + k]
                c_vh, c_diff = coef[2 * taps + k], coef[3 * taps + k]
                lu_row = looked_up[at]
                vv_row = vv_grid[at, start : start + m]
                vh_row = vh_grid[at, start : start + m]
                for b in range(m):
                    vv = vv_row[b]
                    vh = vh_row[b]
                    acc[b] += (c_table * lu_row[b] + c_vv * vv + c_vh * vh + c_diff * (vh - vv))
            sin_i, cos_i = calendar[0, i], calendar[1, i]
            for b in range(m):
                here = looked_up[i, b]
                acc[b] += (coef[base] * sin_i + coef[base + 1] * cos_i
                           + coef[base + 2] * here * sin_i + coef[base + 3] * here * cos_i)
            for b in range(m):
                out[start + b, i] = acc[b]


@njit(cache=True, nogil=True, error_model="numpy")
def radar_samples(vv_grid, vh_grid, edges, bins, table, calendar, reach, rows, cols, design):
    """The radar stage's design matrix at the samples ``(rows, cols)`` (pixel, date).

    Equal to ``radar_features(...).design(rows, cols)`` (float32 table values and products,
    as there), but only the sampled backscatter is looked up.

    Args:
        vv_grid: ``(T, N)`` float32 box-filtered VV in dB.
        vh_grid: ``(T, N)`` float32 box-filtered VH in dB.
        edges: ``(4,)`` the table's fitted edges.
        bins: Bins per axis of the table.
        table: ``(bins * bins,)`` NDVI per bin.
        calendar: ``(2, T)`` float32 day-of-year sin and cos.
        reach: Largest lag.
        rows: ``(S,)`` pixel of each sample.
        cols: ``(S,)`` date of each sample.
        design: ``(S, 4 * (2 * reach + 1) + 4)`` float64 output.
    """
    n_t = vv_grid.shape[0]
    taps = 2 * reach + 1
    for s in range(rows.size):
        p, c = rows[s], cols[s]
        here = np.float32(0.0)
        for k in range(taps):
            at = min(max(c + k - reach, 0), n_t - 1)
            vv = vv_grid[at, p]
            vh = vh_grid[at, p]
            looked_up = np.float32(_lookup(vv, vh, edges, bins, table))
            design[s, k] = looked_up
            design[s, taps + k] = vv
            design[s, 2 * taps + k] = vh
            design[s, 3 * taps + k] = vh - vv
            if k == reach:
                here = looked_up
        sin_c, cos_c = calendar[0, c], calendar[1, c]
        design[s, 4 * taps] = sin_c
        design[s, 4 * taps + 1] = cos_c
        design[s, 4 * taps + 2] = here * sin_c
        design[s, 4 * taps + 3] = here * cos_c


@njit(cache=True, nogil=True, error_model="numpy")
def _sum_f32(values, start, stop):
    """Float32 sum of ``values[start:stop]`` rounded as numpy's own (pairwise, 8 partial sums).

    Exact for runs of up to 128 values (numpy's block); longer ones, which numpy splits
    recursively, are summed in float64 and rounded once (a numba function cannot both recurse
    and be cached).
    """
    n = stop - start
    if n < 8:
        total = np.float32(0.0)
        for i in range(start, stop):
            total += values[i]
        return total
    if n > 128:
        wide = 0.0
        for i in range(start, stop):
            wide += values[i]
        return np.float32(wide)
    r0, r1, r2, r3 = values[start], values[start + 1], values[start + 2], values[start + 3]
    r4, r5, r6, r7 = values[start + 4], values[start + 5], values[start + 6], values[start + 7]
    i = start + 8
    while i < stop - n % 8:
        r0 += values[i]
        r1 += values[i + 1]
        r2 += values[i + 2]
        r3 += values[i + 3]
        r4 += values[i + 4]
        r5 += values[i + 5]
        r6 += values[i + 6]
        r7 += values[i + 7]
        i += 8
    total = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < stop:
        total += values[i]
        i += 1
    return total


@njit(cache=True, nogil=True, error_model="numpy")
def blend_samples(ndvi, radar_ndvi, pixels, keep, times, design, target):
    """The blend stage's training rows: observations hidden by a simulated gap mask.

    Pixel ``pixels[q]`` keeps its observations only where ``keep[q]`` is True (another
    pixel's cloud mask, with or without whole dates removed); every observation so hidden
    becomes a row of ``design`` (the ``blend_features`` columns, computed in float32 exactly
    as there) and of ``target`` (the hidden value), in row-major ``(q, date)`` order.

    Args:
        ndvi: ``(N, T)`` float32 NDVI, NaN where not observed.
        radar_ndvi: ``(N, T)`` float32 stage-1 radar NDVI.
        pixels: ``(P,)`` the pixels whose observations are hidden.
        keep: ``(P, T)`` bool, the simulated gap mask of each of them (True: kept).
        times: ``(T,)`` float64 sample times in days.
        design: ``(>= rows, 11)`` float64 output.
        target: ``(>= rows,)`` float64 output.

    Returns:
        The number of rows written.
    """
    n_t = ndvi.shape[1]
    t = np.empty(n_t, np.float32)
    for i in range(n_t):
        t[i] = np.float32(times[i] - times[0])
    seen = np.empty(n_t, np.float32)  # observed NDVI, 0 where hidden or missing
    prev = np.empty(n_t, np.int64)
    nxt = np.empty(n_t, np.int64)
    scale = np.float32(GAP_DAYS_SCALE)
    cap = np.float32(MAX_GAP)
    zero = np.float32(0.0)
    rows = 0
    for q in range(pixels.size):
        p = pixels[q]
        count = 0
        last = -1
        for i in range(n_t):
            if np.isfinite(ndvi[p, i]) and keep[q, i]:
                seen[i] = ndvi[p, i]
                count += 1
                last = i
            else:
                seen[i] = zero
            prev[i] = last
        following = -1
        for i in range(n_t - 1, -1, -1):
            if np.isfinite(ndvi[p, i]) and keep[q, i]:
                following = i
            nxt[i] = following
        mean = np.float32(np.float64(_sum_f32(seen, 0, n_t)) / max(count, 1))
        for i in range(n_t):
            if not (np.isfinite(ndvi[p, i]) and not keep[q, i]):
                continue  # not an observation hidden by the simulated gaps
            radar = radar_ndvi[p, i]
            lo, hi = prev[i], nxt[i]
            if lo < 0 and hi < 0:  # nothing left to interpolate: 0, the largest distance
                interp = zero
                resid = zero
                gap = cap
            else:
                gap = np.float32(np.inf)
                if lo >= 0:
                    gap = t[i] - t[lo]
                if hi >= 0:
                    gap = min(gap, t[hi] - t[i])
                gap = min(gap / scale, cap)
                if lo < 0:
                    lo = hi
                if hi < 0:
                    hi = lo
                span = t[hi] - t[lo]
                frac = (t[i] - t[lo]) / span if span > zero else zero
                interp = seen[lo] + frac * (seen[hi] - seen[lo])
                r_lo = seen[lo] - radar_ndvi[p, lo]
                resid = r_lo + frac * ((seen[hi] - radar_ndvi[p, hi]) - r_lo)
            design[rows, 0] = radar
            design[rows, 1] = interp
            design[rows, 2] = resid
            design[rows, 3] = gap
            design[rows, 4] = gap * interp
            design[rows, 5] = gap * resid
            design[rows, 6] = gap * radar
            design[rows, 7] = mean
            design[rows, 8] = mean * radar
            design[rows, 9] = gap * gap
            design[rows, 10] = gap * gap * resid
            target[rows] = ndvi[p, i]
            rows += 1
    return rows


@njit(cache=True, nogil=True, error_model="numpy")
def box_filter(grid, size, out):
    """``scipy.ndimage.uniform_filter(grid, (1, size, size), mode="nearest")``, same rounding.

    As scipy does it: along y, then along x over the float32 result of the first pass, each
    line a float64 running sum (the first window summed, then plus the entering minus the
    leaving value per step) divided by ``size``, over the line extended by its edge values.

    Args:
        grid: ``(T, Y, X)`` float32, finite.
        size: Window edge (pixels), ``>= 1``.
        out: ``(T, Y, X)`` float32 output.
    """
    n_t, n_y, n_x = grid.shape
    before = size // 2
    after = size - before - 1
    running = np.empty(n_x)
    line = np.empty(n_x + size)
    for t in range(n_t):
        # along y: every column's running mean side by side
        for x in range(n_x):
            running[x] = 0.0
        for k in range(size):
            row = min(max(k - before, 0), n_y - 1)
            for x in range(n_x):
                running[x] += grid[t, row, x]
        for x in range(n_x):
            out[t, 0, x] = running[x] / size
        for y in range(1, n_y):
            entering = min(y + after, n_y - 1)
            leaving = max(y - before - 1, 0)
            for x in range(n_x):
                running[x] += np.float64(grid[t, entering, x]) - grid[t, leaving, x]
                out[t, y, x] = running[x] / size
        # along x, row by row, over the float32 result of the first pass
        for y in range(n_y):
            for j in range(n_x + size - 1):
                line[j] = out[t, y, min(max(j - before, 0), n_x - 1)]
            total = 0.0
            for j in range(size):
                total += line[j]
            out[t, y, 0] = total / size
            for x in range(1, n_x):
                total += line[x + size - 1] - line[x - 1]
                out[t, y, x] = total / size


@njit(cache=True, nogil=True, error_model="numpy")
def standardise(design, z, mean, std):
    """``z = (design - mean) / std`` per column, with numpy's own mean and std (same rounding).

    numpy reduces a C-ordered ``(S, F)`` array over its rows one row at a time, so these
    sequential sums round as ``design.mean(axis=0)`` and ``design.std(axis=0)`` do; one pass
    centres and sums the squares, one scales. A column with ``std <= 1e-9`` keeps scale 1.

    Args:
        design: ``(S, F)`` float64 features.
        z: ``(S, F)`` float64 output.
        mean: ``(F,)`` output.
        std: ``(F,)`` output (1 for a constant column).
    """
    n_s, n_f = design.shape
    for c in range(n_f):
        mean[c] = 0.0
        std[c] = 0.0
    for s in range(n_s):
        for c in range(n_f):
            mean[c] += design[s, c]
    for c in range(n_f):
        mean[c] /= n_s
    for s in range(n_s):
        for c in range(n_f):
            centred = design[s, c] - mean[c]
            z[s, c] = centred
            std[c] += centred * centred
    for c in range(n_f):
        std[c] = np.sqrt(std[c] / n_s)
        if not std[c] > 1e-9:
            std[c] = 1.0
    for s in range(n_s):
        for c in range(n_f):
            z[s, c] /= std[c]
