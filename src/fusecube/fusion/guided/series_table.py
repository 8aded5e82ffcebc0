"""Gap-filling the field series of a table file (``fusecube fuse series``): read, fuse, write.

The fused table is written as CSV atomically (a failed write never leaves a half table under
the real name); the lines say, per series, what was observed and chosen. Series without any
radar value are left out and named; only a table where no series has radar is refused.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from fusecube.errors import CubeSchemaError, MissingDependencyError

log = logging.getLogger(__name__)

#: Series described one per line in :attr:`SeriesTableResult.lines`.
MAX_LISTED_SERIES = 10
PARQUET_ENGINES = ("pyarrow", "fastparquet")
"""What pandas reads Parquet with (either will do)."""


@dataclass
class SeriesTableResult:
    """The fused table, where it was written, and lines summarising it."""

    fused: pd.DataFrame
    path: Path
    lines: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    """Series left out because they have no radar value."""


def _check_parquet(table: Path) -> None:
    """A clear error, before reading, when a Parquet table cannot be read for want of pyarrow."""
    if table.suffix.lower() == ".parquet" and not any(
            importlib.util.find_spec(engine) for engine in PARQUET_ENGINES):
        raise MissingDependencyError(
            f"Reading the Parquet table {table} needs pyarrow. Install it with: pip install pyarrow "
            "(or write the table as CSV).")


def _with_radar(series, table: Path):
    """``series`` without the series that have no radar value, and their ids."""
    has_radar = np.isfinite(series.radar).any(axis=1)
    if not has_radar.any():
        raise CubeSchemaError(
            f"No series of {table} has a radar value; check the radar column (--radar) and that it "
            "holds numbers.")
    skipped = [str(key) for key in series.ids[~has_radar]]
    if skipped:
        log.warning("%s: %d series without radar left out: %s", table, len(skipped), ", ".join(skipped))
        series = replace(series, ids=series.ids[has_radar], ndvi=series.ndvi[has_radar],
                         radar=series.radar[has_radar])
    return series, skipped


def fuse_series_table(table: Path, *, ndvi: str = "NDVI", radar: str = "RVI_DESC",
                      date: str = "date", id_column: str | None = None,
                      out: Path | None = None) -> SeriesTableResult:
    """Gap-fill every series of a CSV (or Parquet) table and write the fused table as CSV.

    Args:
        table: One row per date (and field) with NDVI and radar columns.
        ndvi: NDVI column.
        radar: Radar column (RVI, or VH in linear units).
        date: Date column.
        id_column: Field id column (many series); None for one series.
        out: CSV to write (default: the table's name + ``_fused.csv``).

    Raises:
        MissingDependencyError: A Parquet table without pyarrow installed.
        CubeSchemaError: No series has a radar value (series without one are skipped).
    """
    from fusecube.fusion.guided.series import fuse_series, read_series_table
    from fusecube.storage.atomic import atomic_path

    table = Path(table)
    _check_parquet(table)
    series = read_series_table(table, ndvi=ndvi, radar=radar, date=date, id_column=id_column)
    series, skipped = _with_radar(series, table)
    fused = fuse_series(series)
    target = out or table.with_name(f"{table.stem}_fused.csv")
    with atomic_path(target) as staged:
        fused.to_csv(staged, index=False, date_format="%Y-%m-%dT%H:%M:%S")
    per_series = fused.drop_duplicates("id")
    lines = [f"{row.id}: {int((~fused[fused['id'] == row.id]['filled']).sum())} observations, "
             f"λ {row.lam:g}, λ_g {row.guide_lam:g}, radar coefficient {row.coef:.3f}, "
             f"leave-one-out RMSE {row.loo_rmse:.4f}"
             for row in per_series.head(MAX_LISTED_SERIES).itertuples()]
    if skipped:
        lines.append(f"skipped {len(skipped)} series without radar: {', '.join(skipped[:MAX_LISTED_SERIES])}"
                     + (f" and {len(skipped) - MAX_LISTED_SERIES} more" if len(skipped) > MAX_LISTED_SERIES else ""))
    lines.append(f"written: {target} ({len(per_series)} series x {series.dates.size} dates)")
    return SeriesTableResult(fused, target, lines, skipped)
