"""Resume state of a STAC fetch: items read so far, saved under ``<out>.parts/``.

The folder carries a fingerprint of the settings (grid, periods, catalogue, SCL classes): a
rerun with the same settings reads only the missing items; other settings need ``restart``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

import numpy as np
from odc.geo.geobox import GeoBox

from fusecube.errors import SourceError
from fusecube.sources.stac.catalogues import StacOptions
from fusecube.storage.atomic import atomic_path

log = logging.getLogger(__name__)


def _parts_dir(out: Path) -> Path:
    return out.with_name(out.name + ".parts")


def _fingerprint(geobox: GeoBox, starts: np.ndarray, options: StacOptions) -> str:
    desc = {"geobox": [str(geobox.crs), list(geobox.affine)[:6], list(geobox.shape.yx)],
            "starts": [str(s) for s in starts], "period_days": options.period_days,
            "catalogue": asdict(options.catalogue), "valid_scl": list(options.valid_scl)}
    return hashlib.sha256(json.dumps(desc, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _save_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    with atomic_path(path) as staged:
        np.savez(staged, **arrays)


def _load_npz(path: Path) -> dict[str, np.ndarray] | None:
    try:
        with np.load(path) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError) as exc:  # a torn file from a crash: read again
        log.warning("ignoring unreadable partial result %s (%s)", path, exc)
        return None


def _prepare_parts(parts: Path, fingerprint: str, restart: bool) -> None:
    stamp = parts / "fingerprint"
    if parts.exists() and stamp.exists() and stamp.read_text() != fingerprint:
        if not restart:
            raise SourceError(
                f"{parts} holds a partial fetch with other settings (AOI, dates, periods or "
                "catalogue); rerun with the same settings to resume, or start over with "
                f"--restart (fusecube fetch) or by deleting {parts}."
            )
        shutil.rmtree(parts)
    (parts / "items").mkdir(parents=True, exist_ok=True)
    stamp.write_text(fingerprint)
