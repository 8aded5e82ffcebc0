"""Products of the paddy stage: COGs, area tables, and the report section's figures and HTML.

Writers put files under a temporary name and rename them (:mod:`fusecube.storage.atomic`).
The report pieces return a matplotlib ``Figure`` or an HTML fragment; the report assembles
them (``paddy_section_html`` is the one call it needs).
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
from pathlib import Path

import numpy as np
import xarray as xr

from fusecube.cube import NDVI, NDVI_FUSED, NDVI_SMOOTH, PADDY_MASK, TIME, VH, X, Y
from fusecube.errors import MaskError
from fusecube.masks.area import paddy_area_by_polygon
from fusecube.masks.paddy_labels import UNKNOWN, binary_scores
from fusecube.masks.paddy_rules import PADDY_PROBABILITY
from fusecube.products._mpl import pyplot
from fusecube.storage.atomic import atomic_path, write_text_atomic
from fusecube.units import to_db

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- files
def write_mask_cog(mask: xr.DataArray, path: Path) -> Path:
    """Write a ``(y, x)`` 0/1 map as a uint8 Cloud-Optimised GeoTIFF (nodata 255)."""
    from fusecube.products.writers import write_cog

    return write_cog(mask, path, mask.odc.geobox.crs, dtype=np.uint8, nodata=255)


def write_paddy_products(result: xr.Dataset, out_dir: str | Path, *,
                         polygons: str | Path | None = None,
                         id_column: str | None = None) -> dict[str, str]:
    """Write the paddy map products of :func:`~fusecube.masks.paddy.detect_paddy`.

    Args:
        result: Dataset with ``paddy_probability`` and ``paddy_mask``.
        out_dir: Output folder (created).
        polygons: Optional vector file (administrative units, irrigation blocks): paddy area
            per polygon goes to ``paddy_area_by_polygon.csv``.
        id_column: Column naming the polygons.

    Returns:
        Product name → path: ``paddy_probability`` (float32 COG), ``paddy_mask`` (uint8 COG),
        ``paddy_summary`` (JSON: area, method, options, validation) and, with polygons,
        ``paddy_area_by_polygon`` (CSV).
    """
    from fusecube.products.writers import write_cog

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    crs = result.odc.geobox.crs
    written = {
        "paddy_probability": str(write_cog(result[PADDY_PROBABILITY], out / "paddy_probability.tif",
                                           str(crs))),
        "paddy_mask": str(write_mask_cog(result[PADDY_MASK], out / "paddy_mask.tif")),
    }
    summary = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in result.attrs.items()}
    summary = {k: (None if isinstance(v, float) and not np.isfinite(v) else v)
               for k, v in summary.items()}  # strict JSON: no NaN
    if polygons is not None:
        table = paddy_area_by_polygon(result[PADDY_MASK], polygons, id_column=id_column)
        path = out / "paddy_area_by_polygon.csv"
        with atomic_path(path) as staged:
            table.to_csv(staged, index=False)
        written["paddy_area_by_polygon"] = str(path)
        summary["polygons"] = {"source": str(polygons), "n": len(table),
                               "paddy_km2_inside": float(table["paddy_km2"].sum())}
    path = out / "paddy_summary.json"
    write_text_atomic(path, json.dumps(summary, indent=2, default=str))
    written["paddy_summary"] = str(path)
    return written


# ----------------------------------------------------------------------------- accuracy
def confusion_matrix(predicted: np.ndarray, reference: np.ndarray,
                     class_names: tuple[str, ...] | None = None) -> dict:
    """Confusion of a 0/1 paddy map against a reference.

    Args:
        predicted: ``(y, x)`` 0/1 map.
        reference: ``(y, x)`` 0/1 reference mask, or land classes when ``class_names`` is given
            (then the paddy class is the one named ``"paddy"``). In a 0/1 reference, 255 marks
            unknown pixels, which are left out.
        class_names: Names of the reference classes ``0..K-1``.

    Returns:
        ``{"rows": names, "columns": ["not paddy", "paddy"], "counts": [[...]], "scores": {...},
        "false_positive_rate": {class: share mapped as paddy}}`` (the last with classes only).
    """
    pred = np.asarray(predicted).astype(bool).ravel()
    ref = np.asarray(reference).ravel()
    if class_names is None:
        known = ref != UNKNOWN  # labels from polygons: unknown outside their region
        pred, ref = pred[known], ref[known]
        class_names = ("not paddy", "paddy")
        ref = (ref > 0).astype(np.int64)
        paddy_class = 1
    else:
        if "paddy" not in class_names:
            raise MaskError(f"Reference classes {class_names} have no 'paddy' class; name it "
                            "'paddy' or pass a 0/1 reference mask.")
        paddy_class = class_names.index("paddy")
        ref = ref.astype(np.int64)
    k = len(class_names)
    counts = np.zeros((k, 2), dtype=np.int64)
    np.add.at(counts, (np.clip(ref, 0, k - 1), pred.astype(np.int64)), 1)
    out = {"rows": list(class_names), "columns": ["not paddy", "paddy"],
           "counts": counts.tolist(), "scores": binary_scores(pred, ref == paddy_class)}
    if len(class_names) > 2:
        totals = counts.sum(axis=1)
        out["false_positive_rate"] = {
            name: float(counts[i, 1] / totals[i]) for i, name in enumerate(class_names)
            if i != paddy_class and totals[i] > 0}
    return out


# ----------------------------------------------------------------------------- figures
def paddy_map_figure(result: xr.Dataset):
    """Figure: the paddy probability and the binary map (after clean-up), with the area."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 5))
    im = axes[0].imshow(result[PADDY_PROBABILITY].values, cmap="YlGn", vmin=0, vmax=1,
                        interpolation="nearest")
    axes[0].set_title("paddy probability")
    fig.colorbar(im, ax=axes[0], shrink=0.7)
    axes[1].imshow(result[PADDY_MASK].values, cmap="Greens", vmin=0, vmax=1,
                   interpolation="nearest")
    km2 = result.attrs.get("paddy_km2")
    axes[1].set_title("paddy map" + (f" ({km2:.1f} km²)" if km2 is not None else ""))
    for ax in axes:
        ax.set_axis_off()
    fig.tight_layout()
    return fig


def confusion_figure(confusion: dict):
    """Figure: a confusion matrix from :func:`confusion_matrix`, row-normalised colours."""
    plt = pyplot()
    counts = np.asarray(confusion["counts"], dtype=float)
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(4.5, 0.5 * len(confusion["rows"]) + 1.5))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks([0, 1], confusion["columns"])
    ax.set_yticks(range(len(confusion["rows"])), confusion["rows"])
    ax.set_xlabel("mapped as")
    ax.set_ylabel("reference")
    for (i, j), n in np.ndenumerate(counts):
        ax.text(j, i, f"{int(n)}\n{100 * share[i, j]:.1f} %", ha="center", va="center",
                color="white" if share[i, j] > 0.5 else "black", fontsize=8)
    f1 = confusion["scores"]["f1"]
    ax.set_title(f"paddy vs reference (F1 {f1:.3f})")
    fig.tight_layout()
    return fig


def example_pixels(result: xr.Dataset, n: int = 3) -> dict[str, list[tuple[int, int]]]:
    """Example pixels, at most ``n`` detected and ``n`` rejected, deterministic.

    Each group is spread over its probability ranking: the most and least certain detections,
    and rejected pixels from those nearest the threshold (the hardest refusals) to the surest.
    """
    prob = np.nan_to_num(result[PADDY_PROBABILITY].values, nan=-1.0).ravel()
    mask = result[PADDY_MASK].values.ravel() > 0
    nx = result.sizes[X]
    picks: dict[str, list[tuple[int, int]]] = {"detected": [], "rejected": []}
    for key, sel in (("detected", mask), ("rejected", ~mask & (prob >= 0))):
        idx = np.flatnonzero(sel)
        if idx.size == 0:
            continue
        order = idx[np.argsort(-prob[idx], kind="stable")]
        chosen = np.unique(order[np.linspace(0, order.size - 1, n).astype(int)])
        picks[key] = [(int(i // nx), int(i % nx)) for i in chosen]
    return picks


def example_curves_figure(cube: xr.Dataset, result: xr.Dataset, n: int = 3):
    """Figure: VH (dB) and NDVI curves of detected and rejected example pixels."""
    plt = pyplot()
    picks = example_pixels(result, n)
    ndvi_name = next((v for v in (NDVI_SMOOTH, NDVI_FUSED) if v in cube), NDVI)
    fig, axes = plt.subplots(2, 2, figsize=(11, 6), sharex=True)
    times = cube[TIME].values
    for col, key in enumerate(("detected", "rejected")):
        for (iy, ix) in picks[key]:
            px = cube[[VH, ndvi_name]].isel({Y: iy, X: ix})  # two variables: fewer chunk reads
            prob = float(result[PADDY_PROBABILITY].values[iy, ix])
            label = f"y={iy} x={ix} p={prob:.2f}"
            vh = to_db(np.asarray(px[VH].values, float))
            axes[0, col].plot(times, vh, lw=1, label=label)
            axes[1, col].plot(times, np.asarray(px[ndvi_name].values, float), ".-", lw=1,
                              label=label)
        axes[0, col].set_title(f"{key} pixels")
        axes[0, col].set_ylabel("VH (dB)")
        axes[1, col].set_ylabel(ndvi_name)
        axes[0, col].axhline(-24, color="0.6", ls=":", lw=1)
        for ax in axes[:, col]:
            if ax.lines:
                ax.legend(fontsize=7)
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig


def figure_png(fig) -> bytes:
    """PNG bytes of a figure (the figure is closed)."""
    plt = pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _img(fig, alt: str) -> str:
    data = base64.b64encode(figure_png(fig)).decode()
    return (f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(alt)}</figcaption></figure>")


def _rows(pairs) -> str:
    body = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>"
                   for k, v in pairs)
    return f"<table><tr><th>item</th><th>value</th></tr>{body}</table>"


def _fmt(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def paddy_section_html(cube: xr.Dataset, result: xr.Dataset, *,
                       reference: np.ndarray | xr.DataArray | None = None,
                       class_names: tuple[str, ...] | None = None, n_examples: int = 3) -> str:
    """HTML fragment of the report's paddy section (figures embedded as PNG).

    Args:
        cube: The cube the map was made from (for example curves).
        result: Output of :func:`~fusecube.masks.paddy.detect_paddy`.
        reference: Truth land classes (synthetic scenes, with ``class_names``) or a 0/1 mask
            (e.g. the given paddy polygons rasterised); None skips the confusion matrix.
        class_names: Names of the reference classes when ``reference`` holds classes.
        n_examples: Example pixels per group in the curves figure.

    Returns:
        ``<section>`` HTML.
    """
    attrs = result.attrs
    parts = ['<section id="paddy"><h2>Paddy map</h2>',
             _rows([("method", attrs.get("method")),
                    ("paddy area (km²)", _fmt(attrs.get("paddy_km2"))),
                    ("threshold", attrs.get("threshold")),
                    ("minimum mapping unit (pixels)", attrs.get("mmu_pixels")),
                    *[(k.replace("_", " "), _fmt(v)) for k, v in attrs.items()
                      if k.startswith("validation_")]]),
             _img(paddy_map_figure(result), "Paddy probability and map")]
    if reference is not None:
        ref = np.asarray(reference.values if isinstance(reference, xr.DataArray) else reference)
        conf = confusion_matrix(result[PADDY_MASK].values, ref, class_names)
        s = conf["scores"]
        parts.append("<h3>Against the reference</h3>" + _rows(
            [(k, _fmt(s[k])) for k in ("accuracy", "precision", "recall", "f1", "iou")]
            + [(f"false-positive rate: {k}", _fmt(v))
               for k, v in conf.get("false_positive_rate", {}).items()]))
        parts.append(_img(confusion_figure(conf), "Confusion matrix"))
    parts.append(_img(example_curves_figure(cube, result, n_examples),
                      "Example curves of detected and rejected pixels"))
    parts.append("</section>")
    return "".join(parts)
