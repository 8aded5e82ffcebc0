"""Fusion of field series from a table: dated NDVI + radar rows in, gap-free NDVI out.

The scene-free setting FuseTS users know from MOGPR: one row per date (and per field, with an
id column), NDVI where Sentinel-2 saw the field, a radar index (RVI, or VH) where Sentinel-1
did. There is no scene to learn a radar model from, so every series is filled by the
radar-guided Whittaker of :mod:`fusecube.fusion.guided.model`, its smoothing chosen per series by
leave-one-out on its own observations.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fusecube.errors import ConfigError, CubeSchemaError, InputFileError
from fusecube.fusion.guided.model import MIN_OBSERVATIONS, guided_whittaker

#: Largest |NDVI| accepted before the column is taken for a scaled product (e.g. x10000).
NDVI_SCALE_LIMIT = 1.5


@dataclass(frozen=True)
class SeriesTable:
    """Series of a table on the union of their dates.

    Attributes:
        ids: ``(N,)`` series labels (the id column's values, or ``["series"]``).
        dates: ``(T,)`` datetime64[ns], sorted, unique.
        ndvi: ``(N, T)`` NDVI, NaN where not observed.
        radar: ``(N, T)`` radar index, NaN where not observed.
    """

    ids: np.ndarray
    dates: np.ndarray
    ndvi: np.ndarray
    radar: np.ndarray


def read_series_table(path: Path, *, ndvi: str = "NDVI", radar: str = "RVI_DESC",
                      date: str = "date", id_column: str | None = None) -> SeriesTable:
    """Read a CSV (or Parquet) of dated NDVI and radar rows into ``(series, dates)`` arrays.

    Dates may carry a time zone (converted to UTC, then dropped) or a time of day (kept).

    Raises:
        InputFileError: The file is missing or unreadable.
        CubeSchemaError: A named column is missing, a date does not parse, a date repeats
            within a series, or NDVI looks scaled.
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"Series table {path} does not exist; pass a CSV with a date column, "
                             f"an NDVI column and a radar column.")
    try:
        frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise InputFileError(f"Cannot read series table {path}: {exc}") from exc
    wanted = [date, ndvi, radar] + ([id_column] if id_column else [])
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        raise CubeSchemaError(
            f"{path} has no column {', '.join(map(repr, missing))}; its columns are "
            f"{list(frame.columns)}. Name them with --date/--ndvi/--radar/--id.")
    try:
        stamps = pd.to_datetime(frame[date], utc=True).dt.tz_localize(None)
    except (ValueError, TypeError) as exc:
        raise CubeSchemaError(f"Column {date!r} of {path} holds values that are not dates "
                              f"({exc}); use ISO dates such as 2019-01-05.") from exc
    keys = frame[id_column].astype(str) if id_column else pd.Series("series", index=frame.index)
    table = pd.DataFrame({"id": keys, "date": stamps,
                          "ndvi": pd.to_numeric(frame[ndvi], errors="coerce"),
                          "radar": pd.to_numeric(frame[radar], errors="coerce")})
    repeated = table.duplicated(["id", "date"])
    if repeated.any():
        first = table[repeated].iloc[0]
        raise CubeSchemaError(
            f"{path}: date {first['date']} appears more than once for series {first['id']!r} "
            f"({int(repeated.sum())} repeated rows); aggregate them (e.g. the daily mean) first.")
    extreme = float(np.nanmax(np.abs(table["ndvi"]), initial=0.0))
    if extreme > NDVI_SCALE_LIMIT:
        raise CubeSchemaError(
            f"Column {ndvi!r} of {path} reaches |NDVI| = {extreme:g}; NDVI lies within [-1, 1]. "
            "The values look scaled (e.g. x10000): divide them by the scale factor first.")
    wide = {name: table.pivot(index="id", columns="date", values=name).sort_index(axis=1)
            for name in ("ndvi", "radar")}
    return SeriesTable(ids=wide["ndvi"].index.to_numpy(),
                       dates=wide["ndvi"].columns.to_numpy("datetime64[ns]"),
                       ndvi=wide["ndvi"].to_numpy(np.float64),
                       radar=wide["radar"].reindex_like(wide["ndvi"]).to_numpy(np.float64))


def fuse_series(series: SeriesTable) -> pd.DataFrame:
    """Gap-free NDVI for every series of ``series`` (radar-guided Whittaker, LOO-chosen).

    Returns:
        One row per series and date: ``id, date, ndvi, radar, ndvi_fused, ndvi_model,
        filled`` (True where ``ndvi_fused`` comes from the model), and per-series columns
        ``lam, guide_lam, coef, loo_rmse`` (the chosen smoothing, the radar coefficient and
        the leave-one-out RMSE of the observations).

    Raises:
        CubeSchemaError: A series has fewer than 4 NDVI observations, or no radar value.
    """
    n_obs = np.isfinite(series.ndvi).sum(axis=1)
    short = n_obs < MIN_OBSERVATIONS
    if short.any():
        raise CubeSchemaError(
            f"Series {series.ids[short][:5].tolist()} have fewer than {MIN_OBSERVATIONS} NDVI "
            f"observations ({n_obs[short][:5].tolist()}); the fill needs at least "
            f"{MIN_OBSERVATIONS} to choose its smoothing. Drop them or add observations.")
    no_radar = ~np.isfinite(series.radar).any(axis=1)
    if no_radar.any():
        raise CubeSchemaError(
            f"Series {series.ids[no_radar][:5].tolist()} have no radar value; check the radar "
            f"column (--radar) for these series.")
    if series.dates.size < 3:
        raise ConfigError(f"A series needs at least 3 dates; the table has {series.dates.size}.")
    days = (series.dates - np.datetime64("1970-01-01", "ns")) / np.timedelta64(1, "D")
    fit = guided_whittaker(series.ndvi, series.radar, days.astype(np.float64))
    n, n_t = series.ndvi.shape
    per_series = {"lam": fit.lam, "guide_lam": fit.guide_lam, "coef": fit.coef,
                  "loo_rmse": fit.loo_rmse}
    return pd.DataFrame({
        "id": np.repeat(series.ids, n_t), "date": np.tile(series.dates, n),
        "ndvi": series.ndvi.ravel(), "radar": series.radar.ravel(),
        "ndvi_fused": fit.filled.ravel(), "ndvi_model": fit.fitted.ravel(),
        "filled": ~np.isfinite(series.ndvi).ravel(),
        **{name: np.repeat(np.asarray(value, np.float64), n_t) for name, value in per_series.items()},
    })


def plot_series(table: pd.DataFrame, path: Path, *, max_series: int = 6) -> Path:
    """Observed NDVI, radar and the fused curve of the first ``max_series`` series (PNG)."""
    from fusecube.products._mpl import pyplot

    plt = pyplot()

    ids = table["id"].drop_duplicates().to_numpy()[:max_series]
    fig, axes = plt.subplots(len(ids), 1, figsize=(9, 2.8 * len(ids)), squeeze=False, sharex=True)
    for ax, key in zip(axes[:, 0], ids, strict=True):
        rows = table[table["id"] == key]
        ax.plot(rows["date"], rows["ndvi_model"], color="#2a7a2a", lw=1.6, label="fused NDVI (model)")
        observed = rows[~rows["filled"]]
        ax.plot(observed["date"], observed["ndvi"], "o", color="black", ms=4, label="observed NDVI")
        radar = rows[np.isfinite(rows["radar"])]
        twin = ax.twinx()
        twin.plot(radar["date"], radar["radar"], ".", color="#7a5aa8", ms=3, alpha=0.6, label="radar")
        twin.set_ylabel("radar", color="#7a5aa8")
        first = rows.iloc[0]
        ax.set_title(f"{key}: λ {first['lam']:g}, λ_g {first['guide_lam']:g}, b {first['coef']:.2f}, "
                     f"leave-one-out RMSE {first['loo_rmse']:.3f}", fontsize=9)
        ax.set_ylabel("NDVI")
        ax.set_ylim(-0.1, 1.0)
        ax.legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
