"""Labels of known paddy and how a classifier trained on them is validated.

Labels come from polygons of known paddy (e.g. irrigation blocks); validation holds out whole
spatial tiles (:func:`spatial_split`) and scores 0/1 maps (:func:`binary_scores`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import numpy as np
import xarray as xr
from odc.geo.geobox import GeoBox

from fusecube.cube import X, Y
from fusecube.errors import MaskError
from fusecube.masks.vector import vector_mask_with_report
from fusecube.splits import block_ids, split_pixels

UNKNOWN = 255
"""Label value of pixels whose class is not known (neither used for training nor validation)."""


def labels_from_vector(path: str | Path, geobox: GeoBox, *,
                       region: Literal["bbox", "all"] | tuple[float, float, float, float] = "bbox",
                       ) -> xr.DataArray:
    """Training labels from polygons of known paddy (e.g. irrigation blocks).

    Inside ``region``, pixels under a polygon are paddy (1) and the others are taken as not
    paddy (0); outside ``region`` the class is unknown (255) and neither trains nor validates.

    Args:
        path: Vector file of paddy polygons, any CRS (read and repaired by
            :func:`fusecube.masks.vector.vector_mask_with_report`).
        geobox: The cube grid.
        region: Where the polygons are complete: ``"bbox"`` (their bounding box, the default:
            the area the map was drawn for), ``"all"`` (the whole cube), or a bounding box
            ``(left, bottom, right, top)`` in the cube's CRS.

    Returns:
        ``(y, x)`` uint8 labels with attributes ``paddy_km2`` and ``polygon_km2``.
    """
    burned, report = vector_mask_with_report(path, geobox)
    ny, nx = geobox.shape
    known = np.zeros((ny, nx), dtype=bool)
    if region == "all":
        known[:] = True
    else:
        if region == "bbox":
            rows, cols = np.nonzero(burned)
            r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        else:
            if isinstance(region, str) or len(region) != 4:
                raise MaskError(f"Label region {region!r} must be 'bbox', 'all' or "
                                "(left, bottom, right, top) in the cube's CRS.")
            left, bottom, right, top = (float(v) for v in region)
            inv = ~geobox.affine
            c_a, r_a = inv * (left, top)
            c_b, r_b = inv * (right, bottom)
            r0, r1 = sorted((int(np.clip(math.floor(min(r_a, r_b)), 0, ny)),
                             int(np.clip(math.ceil(max(r_a, r_b)), 0, ny))))
            c0, c1 = sorted((int(np.clip(math.floor(min(c_a, c_b)), 0, nx)),
                             int(np.clip(math.ceil(max(c_a, c_b)), 0, nx))))
            if r1 <= r0 or c1 <= c0:
                raise MaskError(f"Label region {region} does not overlap the cube "
                                f"{geobox.extent.boundingbox}; give it in the cube's CRS "
                                f"({geobox.crs}).")
        known[r0:r1, c0:c1] = True
    labels = np.where(known, burned > 0, UNKNOWN).astype(np.uint8)
    coords = odc_coords(geobox)
    return xr.DataArray(labels, dims=(Y, X), coords=coords, name="paddy_labels",
                        attrs={"paddy_km2": report.km2, "polygon_km2": report.polygon_km2,
                               "source": str(path), "flag_values": [0, 1, UNKNOWN],
                               "flag_meanings": "not_paddy paddy unknown"})


def odc_coords(geobox: GeoBox) -> dict:
    """y/x coordinates of a GeoBox (with its CRS), as xarray coords."""
    import odc.geo.xr

    return odc.geo.xr.xr_coords(geobox)


def spatial_split(labels: np.ndarray, *, tile: int, validation_fraction: float, buffer: int,
                  seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split labelled pixels into training and validation sets by whole spatial tiles.

    Validation tiles are drawn among tiles with labels (:func:`fusecube.splits.split_pixels`),
    tiles with paddy and tiles without separately, so both classes get validated; training
    pixels within ``buffer`` pixels of a validation tile are dropped, so neighbours of
    validation pixels (same field, same calendar) do not leak into training.

    Returns:
        ``(train, validate)`` boolean ``(y, x)`` masks.
    """
    labelled = labels != UNKNOWN
    n_tiles = np.unique(block_ids(labels.shape, tile)[labelled]).size
    if n_tiles < 2:
        raise MaskError(
            f"The labels cover only {n_tiles} tile(s) of {tile} px; spatially separated "
            "validation needs at least two. Give labels over a larger area or a smaller tile.")
    return split_pixels(labelled, block=tile, fraction=validation_fraction, buffer=buffer,
                        rng=np.random.default_rng(seed), strata=labels == 1)


def binary_scores(predicted: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Accuracy, precision, recall, F1, IoU and counts of a 0/1 prediction against 0/1 truth."""
    p = np.asarray(predicted).astype(bool).ravel()
    r = np.asarray(reference).astype(bool).ravel()
    tp = int((p & r).sum())
    fp = int((p & ~r).sum())
    fn = int((~p & r).sum())
    tn = int((~p & ~r).sum())
    precision = tp / (tp + fp) if tp + fp else float("nan")
    recall = tp / (tp + fn) if tp + fn else float("nan")
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")
    iou = tp / (tp + fp + fn) if tp + fp + fn else float("nan")
    return {"n": int(p.size), "tp": tp, "fp": fp, "fn": fn, "tn": tn,
            "accuracy": (tp + tn) / max(p.size, 1), "precision": precision, "recall": recall,
            "f1": f1, "iou": iou}
