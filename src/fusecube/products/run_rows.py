"""What a run row of the viewer says about a run: size, dates, gap-fill method, output folder.

Finished runs are described from their result cube's metadata (cached: a finished run does not
change); runs still going from their configuration.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np


@lru_cache(maxsize=256)
def _finished(out: str, run_id: str) -> dict:
    from fusecube.cube import read_cube

    with read_cube(Path(out) / "result.zarr", chunks={}) as ds:
        ny, nx = ds.odc.geobox.shape
        times = np.asarray(ds["time"].values, "datetime64[D]")
        method = str(ds["ndvi_fused"].attrs.get("gapfill_method", "")) if "ndvi_fused" in ds else ""
    dates = f"{times[0]} – {times[-1]}" if times.size else ""
    return {"size": f"{nx} × {ny} px", "dates": dates, "n_times": int(times.size),
            "used": method}


def run_overview(record, config, gapfill: dict, published: bool) -> dict:
    """Size, dates, gap-fill (asked for and used) and output folder of a run.

    Args:
        record: The run's ledger record (``id``, ``out``).
        config: Its :class:`~fusecube.config.RunConfig`.
        gapfill: The validated choice from ``run.json`` ({} before the run finished).
        published: Whether the run folder holds this run's finished results.
    """
    source = config.source
    row = {"out": str(record.out), "requested": config.gapfill, "used": gapfill.get("chosen"),
           "size": None, "dates": None, "source": getattr(source, "kind", "")}
    if getattr(source, "kind", "") == "synthetic":
        row["size"] = f"{source.width} × {source.height} px"
        row["dates"] = f"{source.n_periods} periods"
    if published:
        try:
            found = _finished(str(record.out), record.id)
        except Exception:  # a folder changed under the server: fall back to the configuration
            found = {}
        row.update({k: v for k, v in found.items() if v})
    return row
