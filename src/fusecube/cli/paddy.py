"""``fusecube paddy CUBE --out DIR``: map rice paddy from the cube's own time series."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def _region(text: str):
    """``bbox`` | ``all`` | ``LEFT,BOTTOM,RIGHT,TOP`` (cube CRS) → labels_from_vector region."""
    from fusecube.errors import ConfigError

    if text in ("bbox", "all"):
        return text
    try:
        left, bottom, right, top = (float(v) for v in text.split(","))
    except ValueError as exc:
        raise ConfigError(f"--label-region {text!r} must be 'bbox', 'all' or "
                          "LEFT,BOTTOM,RIGHT,TOP in the cube's CRS.") from exc
    return (left, bottom, right, top)


def paddy_cmd(
    cube: Annotated[Path, typer.Argument(help="Cube zarr store (vv, vh, ndvi).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("paddy-out"),
    method: Annotated[str, typer.Option(help="rules (no labels) | supervised (needs --labels).")
                      ] = "rules",
    labels: Annotated[Optional[Path], typer.Option(
        help="Vector file of known paddy (e.g. irrigation blocks) to train on.")] = None,
    label_region: Annotated[str, typer.Option(
        help="Where --labels are complete: bbox (of the polygons), all, or "
             "LEFT,BOTTOM,RIGHT,TOP in the cube's CRS.")] = "bbox",
    threshold: Annotated[float, typer.Option(min=0.0, max=1.0, help="Probability cut.")] = 0.5,
    mmu_ha: Annotated[float, typer.Option(
        "--mmu-ha", min=0.0, help="Minimum mapping unit in hectares (0: none).")] = 1.0,
    polygons: Annotated[Optional[Path], typer.Option(
        help="Polygons (admin units, blocks) to total the paddy area by.")] = None,
    id_column: Annotated[Optional[str], typer.Option(help="Column naming the polygons.")] = None,
    truth: Annotated[Optional[Path], typer.Option(
        help="Truth store with land_class (synthetic scenes) for the confusion matrix.")] = None,
    report: Annotated[bool, typer.Option(help="Write paddy_report.html.")] = True,
) -> None:
    """Detect paddy in CUBE: probability and binary COGs, area in km², optional report."""
    from fusecube.cli.console import out
    from fusecube.cube import read_cube
    from fusecube.errors import ConfigError
    from fusecube.masks.paddy import PaddyConfig, detect_paddy, labels_from_vector
    from fusecube.products.paddy import write_paddy_products

    if method not in ("rules", "supervised"):
        raise ConfigError(f"--method {method!r}: use 'rules' or 'supervised'.")
    if method == "supervised" and labels is None:
        raise ConfigError("--method supervised needs --labels PATH (polygons of known paddy); "
                          "or use --method rules.")
    ds = read_cube(cube, chunks={})  # lazy: features read it stripe by stripe
    label_map = (labels_from_vector(labels, ds.odc.geobox, region=_region(label_region))
                 if labels is not None else None)
    config = PaddyConfig(method=method, threshold=threshold, min_mapping_unit_ha=mmu_ha)
    result = detect_paddy(ds, config=config, labels=label_map)
    products = write_paddy_products(result, out_dir, polygons=polygons, id_column=id_column)
    out.print(f"paddy ({method}): {result.attrs['paddy_km2']:.2f} km²"
              + (f"; held-out tiles F1 {result.attrs['validation_f1']:.3f}"
                 if "validation_f1" in result.attrs else ""))
    reference, class_names = None, None
    if truth is not None:
        truth_ds = read_cube(truth)
        if "land_class" not in truth_ds:
            raise ConfigError(f"--truth {truth} has no land_class variable; give the truth.zarr "
                              "written beside a synthetic cube.")
        reference = truth_ds["land_class"].values
        meanings = truth_ds["land_class"].attrs.get("flag_meanings", "")
        class_names = tuple(meanings.split()) or None
    elif label_map is not None:
        reference = label_map.values
    if reference is not None:
        from fusecube.products.paddy import confusion_matrix

        conf = confusion_matrix(result["paddy_mask"].values, reference, class_names)
        s = conf["scores"]
        out.print(f"vs {'truth' if truth else 'labels'}: F1 {s['f1']:.4f}, IoU {s['iou']:.4f}, "
                  f"accuracy {s['accuracy']:.4f}"
                  + "".join(f"; FPR {k} {v:.4f}" for k, v in
                            conf.get("false_positive_rate", {}).items()))
    if report:
        from fusecube.cube import replace_path
        from fusecube.products.paddy import paddy_section_html

        page = out_dir / "paddy_report.html"
        tmp = page.with_name(f".tmp-{page.name}")
        tmp.write_text("<!doctype html><html><head><meta charset='utf-8'><title>fusecube paddy"
                       "</title></head><body>"
                       + paddy_section_html(ds, result, reference=reference,
                                            class_names=class_names)
                       + "</body></html>")
        replace_path(tmp, page)
        products["paddy_report"] = str(page)
    for key, path in products.items():
        out.print(f"{key:>22}: {path}")


def register(app: typer.Typer) -> None:
    """Add ``fusecube paddy`` to the CLI."""
    app.command("paddy")(paddy_cmd)
