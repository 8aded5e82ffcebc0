"""Gap-filling the field series of a table file (``fusecube fuse series``): read, fuse, write.

The fused table is written as CSV atomically (a failed write never leaves a half table under
the real name); the lines say, per series, what was observed and chosen.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

#: Series described one per line in :attr:`SeriesTableResult.lines`.
MAX_LISTED_SERIES = 10


@dataclass
class SeriesTableResult:
    """The fused table, where it was written, and lines summarising it."""

    fused: pd.DataFrame
    path: Path
    lines: list[str] = field(default_factory=list)


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
    """
    from fusecube.fusion.guided.series import fuse_series, read_series_table
    from fusecube.storage.atomic import atomic_path

    series = read_series_table(table, ndvi=ndvi, radar=radar, date=date, id_column=id_column)
    fused = fuse_series(series)
    target = out or table.with_name(f"{table.stem}_fused.csv")
    with atomic_path(target) as staged:
        fused.to_csv(staged, index=False, date_format="%Y-%m-%dT%H:%M:%S")
    per_series = fused.drop_duplicates("id")
    lines = [f"{row.id}: {int((~fused[fused['id'] == row.id]['filled']).sum())} observations, "
             f"λ {row.lam:g}, λ_g {row.guide_lam:g}, radar coefficient {row.coef:.3f}, "
             f"leave-one-out RMSE {row.loo_rmse:.4f}"
             for row in per_series.head(MAX_LISTED_SERIES).itertuples()]
    lines.append(f"written: {target} ({len(per_series)} series x {series.dates.size} dates)")
    return SeriesTableResult(fused, target, lines)
