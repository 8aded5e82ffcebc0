"""Mapping paddy from a cube store (``fusecube paddy``): detect, write, score, report.

Detection is :func:`~fusecube.masks.paddy.detect_paddy`; the products are written by
:func:`~fusecube.products.paddy.write_paddy_products`; the map is scored against a truth store
(synthetic scenes) or the training labels, and the report page is written atomically.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xarray as xr

from fusecube.errors import ConfigError

PAGE = ("<!doctype html><html><head><meta charset='utf-8'><title>fusecube paddy</title></head>"
        "<body>{section}</body></html>")


@dataclass
class PaddyMapping:
    """The detection result, the files written, and lines summarising them."""

    result: xr.Dataset
    products: dict[str, str]
    lines: list[str] = field(default_factory=list)


def label_region(text: str):
    """``bbox`` | ``all`` | ``LEFT,BOTTOM,RIGHT,TOP`` (cube CRS) → a ``labels_from_vector`` region.

    Raises:
        ConfigError: Anything else.
    """
    if text in ("bbox", "all"):
        return text
    try:
        left, bottom, right, top = (float(v) for v in text.split(","))
    except ValueError as exc:
        raise ConfigError(f"--label-region {text!r} must be 'bbox', 'all' or "
                          "LEFT,BOTTOM,RIGHT,TOP in the cube's CRS.") from exc
    return (left, bottom, right, top)


def truth_reference(truth: Path) -> tuple[np.ndarray, tuple[str, ...] | None]:
    """Land classes of a truth store (written beside a synthetic cube) and their names.

    Raises:
        ConfigError: The store has no ``land_class``.
    """
    from fusecube.cube import read_cube

    truth_ds = read_cube(truth)
    if "land_class" not in truth_ds:
        raise ConfigError(f"--truth {truth} has no land_class variable; give the truth.zarr "
                          "written beside a synthetic cube.")
    meanings = truth_ds["land_class"].attrs.get("flag_meanings", "")
    return truth_ds["land_class"].values, tuple(meanings.split()) or None


def map_paddy(cube: Path, out_dir: Path, *, method: str = "rules", labels: Path | None = None,
              region: str = "bbox", threshold: float = 0.5, mmu_ha: float = 1.0,
              polygons: Path | None = None, id_column: str | None = None,
              truth: Path | None = None, report: bool = True) -> PaddyMapping:
    """Detect paddy in the cube store ``cube`` and write its products into ``out_dir``.

    Args:
        cube: Cube zarr store (vv, vh, ndvi).
        out_dir: Output folder.
        method: ``rules`` (no labels) or ``supervised`` (needs ``labels``).
        labels: Vector file of known paddy (e.g. irrigation blocks) to train on.
        region: Where ``labels`` are complete (see :func:`label_region`).
        threshold: Probability cut.
        mmu_ha: Minimum mapping unit in hectares (0: none).
        polygons: Polygons (admin units, blocks) to total the paddy area by.
        id_column: Column naming the polygons.
        truth: Truth store with ``land_class`` for the confusion matrix (else the labels).
        report: Also write ``paddy_report.html``.

    Raises:
        ConfigError: An unknown method, ``supervised`` without labels, a truth store without
            land classes, or a malformed region.
    """
    from fusecube.cube import read_cube
    from fusecube.masks.paddy import PaddyConfig, detect_paddy
    from fusecube.masks.paddy_labels import labels_from_vector
    from fusecube.products.paddy import confusion_matrix, paddy_section_html, write_paddy_products
    from fusecube.storage.atomic import write_text_atomic

    if method not in ("rules", "supervised"):
        raise ConfigError(f"--method {method!r}: use 'rules' or 'supervised'.")
    if method == "supervised" and labels is None:
        raise ConfigError("--method supervised needs --labels PATH (polygons of known paddy); "
                          "or use --method rules.")
    ds = read_cube(cube, chunks={})  # lazy: features read it stripe by stripe
    label_map = (labels_from_vector(labels, ds.odc.geobox, region=label_region(region))
                 if labels is not None else None)
    config = PaddyConfig(method=method, threshold=threshold, min_mapping_unit_ha=mmu_ha)
    result = detect_paddy(ds, config=config, labels=label_map)
    products = write_paddy_products(result, out_dir, polygons=polygons, id_column=id_column)
    lines = [f"paddy ({method}): {result.attrs['paddy_km2']:.2f} km²"
             + (f"; held-out tiles F1 {result.attrs['validation_f1']:.3f}"
                if "validation_f1" in result.attrs else "")]
    reference, class_names = None, None
    if truth is not None:
        reference, class_names = truth_reference(truth)
    elif label_map is not None:
        reference = label_map.values
    if reference is not None:
        conf = confusion_matrix(result["paddy_mask"].values, reference, class_names)
        s = conf["scores"]
        lines.append(f"vs {'truth' if truth else 'labels'}: F1 {s['f1']:.4f}, IoU {s['iou']:.4f}, "
                     f"accuracy {s['accuracy']:.4f}"
                     + "".join(f"; FPR {k} {v:.4f}" for k, v in
                               conf.get("false_positive_rate", {}).items()))
    if report:
        section = paddy_section_html(ds, result, reference=reference, class_names=class_names)
        page = write_text_atomic(out_dir / "paddy_report.html", PAGE.format(section=section))
        products["paddy_report"] = str(page)
    return PaddyMapping(result, products, lines)
