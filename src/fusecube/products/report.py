"""The HTML report: one self-contained page (figures embedded) tying a run's products together."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from fusecube import __version__
from fusecube.storage.atomic import write_text_atomic

_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%}
.note{color:#555;font-size:.9em}"""


def _table(rows: list[list[str]], header: list[str]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(value, digits: int = 3) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _img(path: str | None, alt: str) -> str:
    if not path or not Path(path).exists():
        return ""
    data = base64.b64encode(Path(path).read_bytes()).decode()
    caption = html.escape(alt)
    return (f'<figure><img alt="{caption}" src="data:image/png;base64,{data}">'
            f"<figcaption>{caption}</figcaption></figure>")


def gapfill_choice_html(choice: dict) -> str:
    """The validated gap-fill choice: every candidate's held-out score, the method used and why."""
    if not choice:
        return "<p>No gap-fill validation was recorded for this run.</p>"

    def interval(s: dict) -> str:
        return "" if s.get("low") is None else f"{s['low']:.4f}–{s['high']:.4f}"

    rows = [[s["method"] + (" ✔" if s["method"] == choice["chosen"] else ""), _fmt(s["rmse"], 4),
             interval(s), ", ".join(f"{k} {v:.4f}" for k, v in s.get("by_scheme", {}).items()),
             ", ".join(f"{k} {v:.4f}" for k, v in s.get("by_stratum", {}).items()),
             "" if s.get("win_share") is None else f"{100 * s['win_share']:.0f} %", s["n"]]
            for s in choice["scores"]]
    notes = "".join(f"<p class='note'>{html.escape(s['method'])}: {html.escape(s['note'])}</p>"
                    for s in choice["scores"] if s.get("note"))
    hidden = choice.get("hidden", {})
    held = ", ".join(sorted({d for dates in hidden.get("held_dates", []) for d in dates}))
    return (f"<p><b>{html.escape(choice['verdict'])}</b>. {html.escape(choice['reason'])}</p>"
            + _table(rows, ["method", "held-out RMSE", "95 % interval", "per scheme",
                            "per stratum", "beats best baseline", "values"])
            + f"<p class='note'>Observed NDVI hidden in {len(hidden.get('windows', []))} windows, "
              f"{len(hidden.get('held_dates', []))} times over: whole dates ({html.escape(held)}) "
              "and cloud-like runs of dates; each method filled them from what was left. "
              "Intervals: bootstrap over spatial tiles.</p>" + notes)


def accuracy_tables(accuracy: dict) -> str:
    """HTML tables of gap-fill and phenology accuracy."""
    parts = []
    gap = accuracy.get("gapfill_hidden", {})
    if gap:
        rows = [[k, v["n"], _fmt(v["rmse"]), _fmt(v["mae"]), _fmt(v["bias"]), _fmt(v["r2"])]
                for k, v in gap.items()]
        parts.append("<h3>Gap-fill accuracy on values hidden by clouds (vs truth)</h3>"
                     + _table(rows, ["subset", "n", "RMSE", "MAE", "bias", "R²"]))
    ph = accuracy.get("phenology")
    if ph:
        rows = [[k, _fmt(v) if not isinstance(v, dict) else ", ".join(f"{a}: {_fmt(b)}" for a, b in v.items())]
                for k, v in ph.items()]
        parts.append("<h3>Phenology accuracy on paddy pixels (vs truth)</h3>" + _table(rows, ["metric", "value"]))
    return "".join(parts)


def write_report(result, inputs, config) -> Path:
    """Write ``report.html`` into the run folder and return its path.

    Args:
        result: The run's :class:`~fusecube.runner.RunResult` (products, accuracy, timings).
        inputs: The run's :class:`~fusecube.runner.inputs.RunInputs`: the quality section shows
            the mask and gate results the run itself used.
        config: The run configuration.
    """
    out = Path(result.out)
    p = result.products
    timing_rows = [[k, _fmt(v, 2)] for k, v in result.seconds.items()]
    product_rows = [[k, Path(v).name] for k, v in p.items() if k != "report"]
    from fusecube.quality.diagnostics import write_run_quality

    quality_json, gates = write_run_quality(result, inputs, config)
    p = {**p, "quality": str(quality_json)}
    if p.get("block_calendar"):
        gates += (f"<p>Per-irrigation-block rice calendar (median and quartile dates per season): "
                  f"<code>{html.escape(Path(p['block_calendar']).name)}</code>.</p>")
    body = f"""<h1>fusecube run report</h1>
<p class="note">fusecube {__version__}; gap-fill <b>{config.gapfill}</b>; Whittaker λ={config.smooth.lam}
({config.smooth.method}); mask <b>{html.escape(config.mask)}</b>; {result.n_blocks} blocks of
{config.block_size} px. Peak memory {result.peak_rss_mb:.0f} MB; total {result.seconds.get('total', 0):.1f} s.</p>
<h2>Rice calendar</h2>
{_img(p.get('map_planting'), 'Planting date (day of year) per season, paddy only')}
{_img(p.get('map_intensity'), 'Cropping intensity: rice seasons per agricultural year')}
<h2>Pixel curves</h2>
{_img(p.get('curves'), 'Example pixels: S1 backscatter, observed, gap-filled, smoothed and true NDVI')}
<h2>Gap-fill choice (validated on this scene)</h2>
{gapfill_choice_html(getattr(result, 'gapfill', {}))}
<h2>Accuracy</h2>
{accuracy_tables(result.accuracy) or '<p>No ground truth for this run: accuracy is not reported.</p>'}
{_img(p.get('scatter'), 'Gap-filled vs true NDVI where clouds hid the observation')}
<h2>Quality gates</h2>{gates}
<h2>Timings (seconds)</h2>{_table(timing_rows, ['stage', 'seconds'])}
<h2>Products</h2>{_table(product_rows, ['product', 'file'])}"""
    head = f"<meta charset='utf-8'><title>fusecube report</title><style>{_CSS}</style>"
    page = f"<!doctype html><html><head>{head}</head><body>{body}</body></html>"
    return write_text_atomic(out / "report.html", page)
