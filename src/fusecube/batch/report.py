"""The batch summary: a map of AOIs coloured by state, counts, bytes, time, and every reason.

Written as ``summary.md``, ``summary.html`` (the map inline), ``map.svg`` and
``summary.json`` in the batch folder, atomically. The map is plain SVG drawn here (AOI
footprints in longitude/latitude, equirectangular), so the report needs no plotting library.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

from fusecube.batch.config import BatchConfig
from fusecube.batch.ledger import STATES, AOIRecord, totals
from fusecube.storage.atomic import write_text_atomic

#: Map colour of each state.
COLOURS = {"pending": "#9e9e9e", "fetching": "#42a5f5", "processing": "#7e57c2",
           "done": "#2e7d32", "failed": "#c62828", "skipped": "#f9a825"}
MAP_W, MAP_H, PAD = 760, 420, 24


def human_bytes(n: float) -> str:
    """``1536`` → ``1.5 kB``."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"  # pragma: no cover


def map_svg(records: list[AOIRecord]) -> str:
    """An SVG map of the AOIs: footprints (or dots when tiny) coloured by state, with a legend."""
    located = [(r, r.bounds_tuple) for r in records if r.bounds_tuple is not None]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{MAP_W}" height="{MAP_H + 30}" '
             f'viewBox="0 0 {MAP_W} {MAP_H + 30}" font-family="sans-serif" font-size="11">',
             f'<rect width="{MAP_W}" height="{MAP_H}" fill="#f4f7fa" stroke="#bbb"/>']
    if located:
        west = min(b[0] for _, b in located)
        south = min(b[1] for _, b in located)
        east = max(b[2] for _, b in located)
        north = max(b[3] for _, b in located)
        span_x = max(east - west, 1e-3)
        span_y = max(north - south, 1e-3)
        cos = max(math.cos(math.radians((south + north) / 2)), 0.05)
        scale = min((MAP_W - 2 * PAD) / (span_x * cos), (MAP_H - 2 * PAD) / span_y)

        def xy(lon: float, lat: float) -> tuple[float, float]:
            return PAD + (lon - west) * cos * scale, MAP_H - PAD - (lat - south) * scale

        for record, (w, s, e, n) in located:
            x0, y1 = xy(w, s)
            x1, y0 = xy(e, n)
            colour = COLOURS.get(record.state, "#000")
            tip = html.escape(f"{record.aoi_id}: {record.state}"
                              + (f" — {record.reason}" if record.reason else ""))
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            parts.append(f'<g><title>{tip}</title>')
            if x1 - x0 >= 4 and y1 - y0 >= 4:
                parts.append(f'<rect x="{x0:.1f}" y="{y0:.1f}" width="{x1 - x0:.1f}" '
                             f'height="{y1 - y0:.1f}" fill="{colour}" fill-opacity="0.55" '
                             f'stroke="{colour}"/>')
            else:
                parts.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="4" fill="{colour}" '
                             'stroke="#fff" stroke-width="0.8"/>')
            parts.append("</g>")
        parts.append(f'<text x="{PAD}" y="14" fill="#555">{west:.3f}..{east:.3f} E, '
                     f'{south:.3f}..{north:.3f} N</text>')
    else:
        parts.append(f'<text x="{MAP_W / 2}" y="{MAP_H / 2}" text-anchor="middle">'
                     'no AOI with valid coordinates</text>')
    unplaced = len(records) - len(located)
    if unplaced:
        parts.append(f'<text x="{MAP_W - PAD}" y="14" text-anchor="end" fill="#c62828">'
                     f'{unplaced} AOI(s) not drawn: invalid coordinates</text>')
    counts = totals(records)["states"]
    x = PAD
    for state in STATES:
        parts.append(f'<rect x="{x}" y="{MAP_H + 10}" width="12" height="12" '
                     f'fill="{COLOURS[state]}"/><text x="{x + 16}" y="{MAP_H + 20}">'
                     f'{state} ({counts.get(state, 0)})</text>')
        x += 118
    parts.append("</svg>")
    return "\n".join(parts)


def _rows(records: list[AOIRecord]) -> list[list[str]]:
    return [[r.aoi_id, r.state, str(r.attempts), str(r.tiles), human_bytes(r.bytes_read),
             f"{r.seconds:.1f}", r.reason] for r in records]


HEAD = ["AOI", "state", "attempts", "tiles", "bytes read", "seconds", "reason"]


def _bytes_note(config: BatchConfig) -> str:
    if config.source != "stac" or config.concurrency == 1:
        return ""
    return ("Bytes read come from GDAL's per-file counters: AOIs reading the same file at the "
            "same time count each other's bytes, so per-AOI figures and their sum can be too high "
            "(never too low); run with --concurrency 1 for exact per-AOI bytes.")


def summary_markdown(batch_id: str, records: list[AOIRecord], config: BatchConfig) -> str:
    """The markdown summary (links ``map.svg``)."""
    t = totals(records)
    counts = ", ".join(f"{n} {s}" for s, n in t["states"].items() if n)
    lines = [f"# Batch {batch_id}", "",
             f"{t['aois']} AOIs, {config.start} to {config.end}, source {config.source}, "
             f"producing {', '.join(config.produce)}.", "",
             f"**{counts}** — {t['tiles']} tiles, {human_bytes(t['bytes_read'])} read, "
             f"{t['seconds']:.1f} s of AOI work, {t['attempts']} attempts.", "",
             "![AOIs coloured by state](map.svg)", "",
             "| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD)]
    for row in _rows(records):
        lines.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in row) + " |")
    if _bytes_note(config):
        lines += ["", _bytes_note(config)]
    return "\n".join(lines) + "\n"


def summary_html(batch_id: str, records: list[AOIRecord], config: BatchConfig, svg: str) -> str:
    """The HTML summary with the map inline."""
    t = totals(records)
    cards = "".join(f'<div class="card" style="border-color:{COLOURS[s]}"><b>{n}</b><br>{s}</div>'
                    for s, n in t["states"].items())
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" if i != 1 else
                         f'<td style="color:{COLOURS.get(c, "#000")}"><b>{html.escape(c)}</b></td>'
                         for i, c in enumerate(row)) + "</tr>" for row in _rows(records))
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>fusecube batch {html.escape(batch_id)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}
.card{{display:inline-block;border-left:6px solid;padding:.4em .9em;margin:.2em;background:#fafafa}}
table{{border-collapse:collapse;font-size:13px}}td,th{{border:1px solid #ddd;padding:3px 6px;text-align:left}}
</style></head><body>
<h1>Batch {html.escape(batch_id)}</h1>
<p>{t['aois']} AOIs, {html.escape(config.start)} to {html.escape(config.end)}, source
{html.escape(config.source)}, producing {html.escape(', '.join(config.produce))}.</p>
<div>{cards}</div>
<p>{t['tiles']} tiles, {human_bytes(t['bytes_read'])} read, {t['seconds']:.1f} s of AOI work,
{t['attempts']} attempts.</p>
{svg}
<table><tr>{''.join(f'<th>{h}</th>' for h in HEAD)}</tr>{body}</table>
<p><small>{html.escape(_bytes_note(config))}</small></p>
</body></html>
"""


def write_report(out: Path, batch_id: str, records: list[AOIRecord], config: BatchConfig
                 ) -> dict[str, Path]:
    """Write ``summary.md``, ``summary.html``, ``map.svg`` and ``summary.json`` into ``out``."""
    out = Path(out)
    svg = map_svg(records)
    paths = {"markdown": out / "summary.md", "html": out / "summary.html", "map": out / "map.svg",
             "json": out / "summary.json"}
    write_text_atomic(paths["map"], svg)
    write_text_atomic(paths["markdown"], summary_markdown(batch_id, records, config))
    write_text_atomic(paths["html"], summary_html(batch_id, records, config, svg))
    write_text_atomic(paths["json"], json.dumps({"batch_id": batch_id, "totals": totals(records),
                                                 "aois": [r.to_dict() for r in records]},
                                                indent=1, default=str))
    return paths
