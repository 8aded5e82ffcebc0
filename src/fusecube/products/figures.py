"""Figures for the report: season maps, cropping intensity, pixel curves, gap-fill scatter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr
from matplotlib.colors import ListedColormap

from fusecube.cube import NDVI, NDVI_FUSED, NDVI_SMOOTH, PADDY_MASK, SEASON, TIME, VH, VV, YEAR, X, Y
from fusecube.products._mpl import pyplot
from fusecube.products.overlays import INTENSITY_COLORS, MONTH_STARTS, MONTHS, month_cmap
from fusecube.units import to_db

plt = pyplot()


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def season_map(pheno: xr.Dataset, name: str, path: Path) -> Path:
    """Grid of maps of ``name`` (a day-of-year variable), one panel per season slot with data.

    Dates are coloured by month (:func:`~fusecube.products.overlays.month_cmap`), as in the viewer.
    """
    slots = [i for i in range(pheno.sizes[SEASON]) if np.isfinite(pheno[name].isel({SEASON: i}).values).any()]
    slots = slots or [0]
    cols = min(3, len(slots))
    rows = int(np.ceil(len(slots) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 4.2 * rows), squeeze=False)
    cmap, norm = month_cmap()
    centres = [(a + b) / 2 for a, b in zip(MONTH_STARTS, [*MONTH_STARTS[1:], 367], strict=True)]
    for ax, i in zip(axes.flat, slots, strict=False):
        layer = pheno[name].isel({SEASON: i})
        im = ax.imshow(layer.values, cmap=cmap, norm=norm, interpolation="nearest")
        ax.set_title(f"{name.replace('_doy', '')} {pheno['season_label'].values[i]}")
        ax.set_axis_off()
        bar = fig.colorbar(im, ax=ax, shrink=0.7, label="month", ticks=centres)
        bar.ax.set_yticklabels(MONTHS, fontsize=7)
    for ax in list(axes.flat)[len(slots):]:
        ax.set_axis_off()
    return _save(fig, path)


def intensity_map(pheno: xr.Dataset, path: Path) -> Path:
    """Cropping intensity (rice seasons per agricultural year)."""
    n = pheno.sizes[YEAR]
    fig, axes = plt.subplots(1, n, figsize=(4.5 * n, 4.5), squeeze=False)
    cmap = ListedColormap(INTENSITY_COLORS)  # the viewer's colours
    top = len(INTENSITY_COLORS) - 0.5
    for i, ax in enumerate(axes.flat):
        counts = np.asarray(pheno["season_count"].isel({YEAR: i}).values, float)
        counts = np.where((counts >= 0) & (counts < 255), counts, np.nan)  # fill values clear
        im = ax.imshow(counts, cmap=cmap, vmin=-0.5, vmax=top, interpolation="nearest")
        ax.set_title(f"rice seasons {pheno['year_label'].values[i]}")
        ax.set_axis_off()
    fig.colorbar(im, ax=list(axes.flat), ticks=list(range(len(INTENSITY_COLORS))), shrink=0.7,
                 label="seasons per year")
    return _save(fig, path)


def reason_map(pheno: xr.Dataset, path: Path) -> Path:
    """Per season slot, each pixel's season found or the main reason its slot is empty."""
    from fusecube.products.season_reasons import CATEGORIES, COLORS, main_reason

    n = pheno.sizes[SEASON]
    cols = min(3, n)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 4.2 * rows), squeeze=False)
    cmap = ListedColormap(COLORS)
    mask = pheno[PADDY_MASK].values > 0 if PADDY_MASK in pheno else True
    for i, ax in enumerate(axes.flat[:n]):
        code = main_reason(pheno["season_reason"].isel({SEASON: i}).values)
        code = np.where(mask, code, len(CATEGORIES) - 1)
        im = ax.imshow(code, cmap=cmap, vmin=-0.5, vmax=len(CATEGORIES) - 0.5,
                       interpolation="nearest")
        ax.set_title(str(pheno["season_label"].values[i]) if "season_label" in pheno.coords
                     else f"season slot {i + 1}")
        ax.set_axis_off()
    for ax in list(axes.flat)[n:]:
        ax.set_axis_off()
    bar = fig.colorbar(im, ax=list(axes.flat), ticks=list(range(len(CATEGORIES))), shrink=0.7)
    bar.ax.set_yticklabels(CATEGORIES, fontsize=8)
    return _save(fig, path)


def _example_pixels(cube: xr.Dataset, truth: xr.Dataset | None, n: int = 3) -> list[tuple[int, int]]:
    """A few paddy pixels (2- and 3-season ones when the truth knows) and one other pixel."""
    mask = cube[PADDY_MASK].values > 0 if PADDY_MASK in cube else np.ones((cube.sizes[Y], cube.sizes[X]), bool)
    picks: list[tuple[int, int]] = []
    if truth is not None and "true_season_count" in truth:
        count = np.nan_to_num(truth["true_season_count"].isel({YEAR: 0}).values)
        for k in (3, 2):
            ys, xs = np.nonzero(mask & (count == k))
            if ys.size:
                picks.append((int(ys[ys.size // 2]), int(xs[xs.size // 2])))
    ys, xs = np.nonzero(mask)
    while len(picks) < n - 1 and ys.size:
        j = (len(picks) + 1) * ys.size // n
        picks.append((int(ys[j]), int(xs[j])))
    ys, xs = np.nonzero(~mask)
    if ys.size:
        picks.append((int(ys[ys.size // 2]), int(xs[xs.size // 2])))
    return picks[:n + 1]


def pixel_curves(cube: xr.Dataset, result: xr.Dataset, truth: xr.Dataset | None, path: Path, *,
                 screened: list[int] | tuple[int, ...] = ()) -> Path:
    """Time series of example pixels: S1 (dB), observed, gap-filled, smoothed and true NDVI, seasons.

    Args:
        cube: The input cube.
        result: The result cube.
        truth: The synthetic truth, or None.
        path: PNG to write.
        screened: Periods the screen treated as missing (all-zero composites): their NDVI is
            never drawn as an observation, only marked on the time axis.
    """
    picks = _example_pixels(cube, truth)
    fig, axes = plt.subplots(len(picks), 1, figsize=(11, 2.8 * len(picks)), squeeze=False)
    times = cube[TIME].values
    # every series of every pick in one point selection per variable: each zarr chunk is read
    # once, not once per pick
    points = {Y: xr.DataArray([p[0] for p in picks], dims="pick"),
              X: xr.DataArray([p[1] for p in picks], dims="pick")}

    def at_picks(ds: xr.Dataset, name: str) -> np.ndarray:
        return ds[name].isel(points).transpose("pick", ...).values

    series = {name: at_picks(cube, name) for name in (NDVI, VV, VH)}
    screened = [int(i) for i in screened if 0 <= int(i) < times.size]
    series[NDVI] = np.asarray(series[NDVI], float)
    series[NDVI][:, screened] = np.nan  # screened out: not an observation
    series |= {name: at_picks(result, name) for name in (NDVI_FUSED, NDVI_SMOOTH, "sos", "eos")
               if name in result}
    if truth is not None:
        series["ndvi_true"] = at_picks(truth, "ndvi_true")
    paddy_at = at_picks(cube, PADDY_MASK) if PADDY_MASK in cube else np.ones(len(picks), bool)
    for k, (ax, (iy, ix)) in enumerate(zip(axes[:, 0], picks, strict=True)):
        ax.plot(times, series[NDVI][k], "o", color="tab:green", ms=4, label="observed NDVI")
        if screened:
            ax.plot(times[screened], np.full(len(screened), -0.15), "x", color="#c62828", ms=6,
                    label="screened out (broken composite)")
        for name, style in ((NDVI_FUSED, ":"), (NDVI_SMOOTH, "-")):
            if name in series:
                ax.plot(times, series[name][k], style, color="tab:blue", label=name)
        if truth is not None:
            ax.plot(times, series["ndvi_true"][k], "--", color="k", lw=1, label="true NDVI")
        for key, color in (("sos", "tab:orange"), ("eos", "tab:red")):
            for value in series.get(key, np.empty((len(picks), 0)))[k]:
                if not np.isnat(value):
                    ax.axvline(value, color=color, lw=1, alpha=0.7)
        ax.set_ylim(-0.2, 1.0)
        ax.set_ylabel("NDVI")
        twin = ax.twinx()
        for name, color in ((VV, "0.6"), (VH, "tab:purple")):
            twin.plot(times, to_db(series[name][k]), color=color, lw=0.8, alpha=0.6,
                      label=f"{name.upper()} dB")
        twin.set_ylabel("backscatter (dB)")
        paddy = bool(paddy_at[k])
        ax.set_title(f"pixel y={iy} x={ix} ({'paddy' if paddy else 'not paddy'}); orange SOS, red EOS",
                     fontsize=9)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    h2, l2 = axes[0, 0].figure.axes[-1].get_legend_handles_labels()
    fig.legend(handles + h2, labels + l2, loc="upper center", ncol=6, fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    return _save(fig, path)


def hidden_scatter(sample: dict[str, np.ndarray], path: Path) -> Path:
    """Density of gap-filled vs true NDVI where clouds hid the observation (paddy pixels).

    Args:
        sample: ``true`` and one array per gap-filled variable (``ndvi_fused``,
            ``ndvi_smooth``), as drawn by :class:`fusecube.evaluate.accuracy.HiddenSample`.
        path: PNG to write.
    """
    names = [n for n in (NDVI_FUSED, NDVI_SMOOTH) if n in sample]
    fig, axes = plt.subplots(1, max(len(names), 1), figsize=(4.5 * max(len(names), 1), 4.2),
                             squeeze=False)
    for ax, name in zip(axes[0], names, strict=False):
        pred = sample[name]
        sel = np.isfinite(pred) & np.isfinite(sample["true"])
        ax.hexbin(sample["true"][sel], pred[sel], gridsize=40, cmap="viridis", mincnt=1)
        ax.plot([-0.2, 1], [-0.2, 1], "w--", lw=1)
        ax.set_xlabel("true NDVI (under clouds)")
        ax.set_ylabel(name)
        ax.set_title(f"{name}: paddy, hidden values (n = {int(sel.sum()):,})")
    fig.tight_layout()
    return _save(fig, path)
