"""Blocks of the run report: what was done, headline scores, gates, products, definitions.

Every block is an HTML fragment built from what the run recorded (its configuration, result
cube, :class:`~fusecube.runner.RunResult` and gate summary); nothing is recomputed here.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

#: The page style of the report and of the quality page.
CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%}
.note{color:#555;font-size:.9em}.done{background:#f4f8f5;border:1px solid #cfe3d4;padding:.2em 1em}
.done dt{font-weight:bold;float:left;clear:left;width:11em}.done dd{margin:0 0 .3em 12em}
.planted{background:#fff4d6}.pass{color:#2e7d32}.warn{color:#b26a00}.fail{color:#c62828}
.skip{color:#777}td span.l{display:block;text-align:left}nav a{margin-right:1em}code{font-size:.95em}"""

#: The season dates the report and the products name.
DEFINITIONS = (
    ("planting", "the trough of the smoothed NDVI before green-up: the flooded field, when rice "
                 "is transplanted."),
    ("SOS", "start of season: the smoothed NDVI has risen by the SOS fraction of the season's "
            "amplitude above its base (or, failing that, the steepest green-up)."),
    ("POS", "peak of season: the date of the highest smoothed NDVI."),
    ("EOS", "end of season: the smoothed NDVI has fallen back to the EOS fraction of the "
            "amplitude above the post-harvest base (or the steepest senescence)."),
    ("harvest", "the steepest decline after the peak: the crop is cut. It usually comes "
                "before EOS, because the curve keeps falling (stubble, drying field) for some "
                "days after the harvest."),
)


def esc(value) -> str:
    """HTML-escaped text of a value."""
    return html.escape(str(value))


def table(rows: list[list[str]], header: list[str], *, raw: bool = False) -> str:
    """An HTML table; cells are escaped unless ``raw`` (already HTML)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    cell = (lambda c: str(c)) if raw else esc
    body = "".join("<tr>" + "".join(f"<td>{cell(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _source_text(config) -> str:
    source = config.source
    kind = getattr(source, "kind", type(source).__name__)
    if kind == "synthetic":
        return (f"synthetic Demak-like scene, {source.width} x {source.height} px, seed "
                f"{source.seed} (ground truth known, faults planted on purpose)")
    fields = {k: v for k, v in source.model_dump(mode="json").items()
              if k != "kind" and v not in (None, [], {})}
    shown = ", ".join(f"{k} {v}" for k, v in list(fields.items())[:4])
    return f"{kind}: {shown}" if shown else str(kind)


def _grid_text(ds) -> tuple[str, str]:
    from fusecube.products.catalog import crs_name

    geobox = ds.odc.geobox
    if geobox is None or geobox.crs is None:  # a cube without georeferencing
        return f"{ds.sizes.get('x', '?')} x {ds.sizes.get('y', '?')} px", "no CRS recorded"
    ny, nx = geobox.shape
    crs = geobox.crs
    res = abs(float(geobox.resolution.x))
    size = f"{nx} x {ny} px"
    if crs is not None and crs.units and crs.units[0].startswith("met"):
        size += f" of {res:g} m ({nx * ny * res * res / 1e6:.2f} km²)"
    else:
        size += f" of {res:g} CRS units"
    bbox = geobox.extent.to_crs("EPSG:4326").boundingbox
    where = (f"{crs_name(crs)}; lon {bbox.left:.4f}..{bbox.right:.4f}, "
             f"lat {bbox.bottom:.4f}..{bbox.top:.4f}")
    return size, where


def _dates_text(ds) -> str:
    times = np.asarray(ds["time"].values, "datetime64[D]")
    if not times.size:
        return "no dates"
    step = int(np.median(np.diff(times).astype(int))) if times.size > 1 else 0
    return (f"{times[0]} to {times[-1]}: {times.size} periods"
            + (f" of {step} days" if step else ""))


def headline_scores(result) -> list[str]:
    """One line per headline score: the gap-fill's held-out error and, with truth, accuracy."""
    lines = []
    choice = getattr(result, "gapfill", {}) or {}
    chosen = next((s for s in choice.get("scores", []) if s["method"] == choice.get("chosen")),
                  None)
    if chosen and chosen.get("rmse") is not None:
        lines.append(f"gap-fill held-out RMSE {chosen['rmse']:.3f} NDVI ({chosen['method']}, "
                     f"{chosen['n']:,} hidden observations)")
    gap = (result.accuracy or {}).get("gapfill_hidden", {}).get("fused_paddy")
    if gap:
        lines.append(f"gap-fill vs truth under clouds (paddy): RMSE {gap['rmse']:.3f}, "
                     f"R² {gap['r2']:.2f}")
    ph = (result.accuracy or {}).get("phenology") or {}
    if "sos_mae_days" in ph:
        lines.append(f"season dates vs truth: SOS MAE {ph['sos_mae_days']:.1f} d, EOS MAE "
                     f"{ph['eos_mae_days']:.1f} d; season count correct "
                     f"{100 * ph.get('season_count_accuracy', float('nan')):.1f} %")
    return lines


def what_was_done(result, inputs, config, ds, gates: dict) -> str:
    """The opening block: inputs, CRS, size, dates, gap-fill and why, headline scores, gates."""
    size, where = _grid_text(ds)
    choice = getattr(result, "gapfill", {}) or {}
    method = choice.get("chosen") or config.gapfill
    why = choice.get("reason") or "no validation was recorded for this run"
    if choice.get("requested") and choice.get("requested") != method:
        why = f"{choice['requested']} was asked for; {why}"
    mask = inputs.mask_report or {}
    mask_text = (f"{config.mask}: {mask.get('pixels', 0):,} pixels, "
                 f"{mask.get('percent_of_aoi', 0):.1f} % of the area" if mask else
                 f"{config.mask} (every pixel processed)")
    scores = headline_scores(result) or ["no held-out score or ground truth was recorded"]
    items = [("input", _source_text(config)), ("grid", size), ("CRS and extent", where),
             ("dates", _dates_text(ds)), ("mask", mask_text),
             ("gap-fill", f"<b>{esc(method)}</b>: {esc(why)}"),
             ("smoothing", f"Whittaker λ={config.smooth.lam} ({esc(config.smooth.method)})"),
             ("headline scores", "<br>".join(esc(s) for s in scores)),
             ("quality gates", f"{esc(gates['text'])} (<a href='#gates'>below</a>)")]
    body = "".join(f"<dt>{esc(k)}</dt><dd>{v if k in ('gap-fill', 'headline scores', 'quality gates') else esc(v)}</dd>"
                   for k, v in items)
    return f"<section class='done'><h2>What was done</h2><dl>{body}</dl></section>"


def gate_rows(gates: list[dict]) -> list[list[str]]:
    """Rows of a gate table (HTML cells), planted faults labelled."""
    rows = []
    for g in gates:
        status = f"<span class='{esc(g['status'])}'><b>{esc(g['status'])}</b></span>"
        finding = esc(g.get("message") or "")
        if g.get("planted"):
            status += " (planted)"
            finding += f"<br><i>{esc(g['note'])}</i>"
        rows.append([esc(g["gate"]), esc(g["stage"]), status, f"<span class='l'>{finding}</span>"])
    return rows


def gates_section(gates: dict, quality_link: str, figures: str = "") -> str:
    """The one "Quality gates" section: the shared count, what did not pass, every gate."""
    notable = [g for g in gates["gates"] if g["status"] in ("warn", "fail")]
    header = ["gate", "stage", "status", "finding"]
    listed = (table(gate_rows(notable), header, raw=True) if notable
              else "<p>Every gate passed.</p>")
    return (f"<h2 id='gates'>Quality gates</h2><p>{esc(gates['text'])}. Details, the mask and "
            f"figures: <a href='{esc(quality_link)}'>quality page</a>.</p>{listed}"
            f"<details><summary>all {gates['total']} gates</summary>"
            f"{table(gate_rows(gates['gates']), header, raw=True)}</details>{figures}")


def _describe(key: str, name: str) -> str:
    known = {"phenology": "season dates and counts per pixel (NetCDF)",
             "result": "the whole result cube (zarr: fused and smoothed NDVI, seasons)",
             "block_calendar": "rice calendar per irrigation block (CSV)",
             "quality": "the quality page: every gate, the mask, figures",
             "run.json": "the run's record: timings, memory, gates, scores",
             "scatter": "figure: gap-filled vs true NDVI", "curves": "figure: example pixels"}
    if key in known:
        return known[key]
    if name.startswith("cogs/"):
        return "GeoTIFF (COG) map"
    if name.startswith("figures/"):
        return "figure"
    return ""


def products_section(products: dict[str, str], out: Path) -> str:
    """Links to every product (relative to the run folder), COGs grouped in one row."""
    out = Path(out)
    entries = {**products, "run.json": str(out / "run.json")}
    rows, cogs = [], []
    for key, path in entries.items():
        if key == "report":
            continue
        try:
            name = Path(path).relative_to(out).as_posix()
        except ValueError:
            name = Path(path).name
        link = f"<a href='{esc(name)}'>{esc(name)}</a>"
        if name.startswith("cogs/"):
            cogs.append(f"<a href='{esc(name)}'>{esc(Path(name).stem)}</a>")
        else:
            rows.append([link, esc(_describe(key, name))])
    if cogs:
        rows.append([f"cogs/ ({len(cogs)} GeoTIFFs)", " · ".join(cogs)])
    return "<h2>Products</h2>" + table(rows, ["file", "what"], raw=True)


def definitions_section() -> str:
    """Definitions of planting, SOS, POS, EOS and harvest."""
    items = "".join(f"<dt><b>{esc(k)}</b></dt><dd>{esc(v)}</dd>" for k, v in DEFINITIONS)
    return (f"<h2>Season dates: definitions</h2><dl>{items}</dl><p class='note'>Season slots are "
            "numbered within the agricultural year (season1, season2, ...); S1 and S2 in this "
            "report always mean Sentinel-1 and Sentinel-2.</p>")


def reasons_section(products: dict[str, str], image: str) -> str:
    """Why season slots are empty: the table the run wrote (``season_reasons.csv``) and its map."""
    import csv

    path = products.get("season_reasons")
    if not path or not Path(path).exists():
        return ("<p class='note'>This run wrote no reason codes (provenance off): empty "
                "season slots are not explained.</p>")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    header = list(rows[0]) if rows else []
    body = [[r[k] for k in header] for r in rows]
    return (table(body, [h.replace("_", " ") for h in header]) + image
            + "<p class='note'>Paddy pixels per season slot: how many hold a season, and how many "
            "empty slots carry each reason (a slot may carry several; the map shows the first of "
            "too few observations, cut by the series edge, implausible length or peak, amplitude "
            "below threshold). Codes: <code>season_reason</code> in result.zarr and "
            "phenology.nc (CF flag_masks).</p>")
