"""The HTML report: one self-contained page (figures embedded) tying a run's products together.

It opens with what was done (inputs, grid, dates, gap-fill and why, headline scores, the gate
count shared with the viewer and the API: :func:`fusecube.quality.summary.gate_summary`),
links every product and the quality page (same style), and defines the season dates.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

from fusecube import __version__
from fusecube.products import report_blocks as blocks
from fusecube.storage.atomic import write_text_atomic

_CSS = blocks.CSS
CURVES_CAPTION = ("Example pixels: S1 backscatter, observed, gap-filled, smoothed and true NDVI; "
                  "screened periods (broken composites) are marked x, never drawn as observations")


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


def _page(title: str, body: str) -> str:
    head = f"<meta charset='utf-8'><title>{html.escape(title)}</title><style>{_CSS}</style>"
    return f"<!doctype html><html lang='en'><head>{head}</head><body>{body}</body></html>"


def run_gates(result, inputs) -> dict:
    """The run's gate summary (the API's and the viewer's count), planted faults marked."""
    from fusecube.quality.summary import gate_summary
    from fusecube.sources.synthetic.planted import planted_in_store

    screen = result.screen or inputs.screen
    return gate_summary(screen, getattr(result, "result_gates", None),
                        planted_in_store(result.truth or inputs.truth_path))


def write_quality_page(out: Path, gates: dict, inputs) -> Path:
    """``quality/quality.html`` in the report's style: the same gate count, the mask, figures."""
    from fusecube.quality.diagnostics import mask_table

    folder = Path(out) / "quality"
    captions = {"valid_fraction": "Valid share of pixels per period, S1 and S2 (screened "
                                  "periods marked)",
                "availability": "Availability per period and image row",
                "mask_overlay": "Paddy mask over the mean NDVI"}
    figures = "".join(f"<figure><img alt='{html.escape(c)}' src='{k}.png'><figcaption>"
                      f"{html.escape(c)}</figcaption></figure>"
                      for k, c in captions.items() if (folder / f"{k}.png").exists())
    body = ("<nav><a href='../report.html'>← run report</a><a href='quality.json'>quality.json"
            "</a></nav><h1>Quality of the run</h1>"
            + blocks.gates_section(gates, "quality.html").replace(
                "Details, the mask and figures: <a href='quality.html'>quality page</a>.",
                "Mask and figures below.")
            + f"<h2>Mask</h2>{mask_table(inputs.mask_report)}{figures}")
    return write_text_atomic(folder / "quality.html", _page("fusecube quality", body))


def write_report(result, inputs, config) -> Path:
    """Write ``report.html`` (and the styled ``quality/quality.html``); return the report's path.

    Args:
        result: The run's :class:`~fusecube.runner.RunResult` (products, accuracy, timings,
            screen, result gates, gap-fill choice).
        inputs: The run's :class:`~fusecube.runner.inputs.RunInputs`: the quality section shows
            the mask and gate results the run itself used.
        config: The run configuration.
    """
    from fusecube.cube import read_cube
    from fusecube.quality.diagnostics import write_run_quality

    out = Path(result.out)
    p = dict(result.products)
    quality_json, _ = write_run_quality(result, inputs, config)
    gates = run_gates(result, inputs)
    quality_page = write_quality_page(out, gates, inputs)
    p["quality"] = str(quality_page)
    with read_cube(result.result, chunks={}) as ds:
        done = blocks.what_was_done(result, inputs, config, ds, gates)
    timing_rows = [[k, _fmt(v, 2)] for k, v in result.seconds.items()]
    figure = out / "quality" / "valid_fraction.png"
    body = f"""<h1>fusecube run report</h1>
<p class="note">fusecube {__version__}; run {html.escape(getattr(result, 'run_id', '') or '')};
{result.n_blocks} blocks of {config.block_size} px; peak memory {result.peak_rss_mb:.0f} MB;
total {result.seconds.get('total', 0):.1f} s.</p>
{done}
{blocks.products_section(p, out)}
<h2>Rice calendar</h2>
{_img(p.get('map_planting'), 'Planting date per season, paddy only (colour: month)')}
{_img(p.get('map_intensity'), 'Cropping intensity: rice seasons per agricultural year')}
{blocks.definitions_section()}
<h2>Why season slots are empty</h2>
{blocks.reasons_section(p, _img(p.get('map_season_reason'), 'Season found, or the main reason the slot is empty'))}
<h2>Pixel curves</h2>
{_img(p.get('curves'), CURVES_CAPTION)}
<h2>Gap-fill choice (validated on this scene)</h2>
{gapfill_choice_html(getattr(result, 'gapfill', {}))}
<h2>Accuracy</h2>
{accuracy_tables(result.accuracy) or '<p>No ground truth for this run: accuracy is not reported.</p>'}
{_img(p.get('scatter'), 'Gap-filled vs true NDVI where clouds hid the observation')}
{blocks.gates_section(gates, 'quality/quality.html', _img(str(figure), 'Valid observations per period'))}
<p class="note">Gate results as JSON: <a href="quality/{quality_json.name}">quality/{quality_json.name}</a>.</p>
<h2>Timings (seconds)</h2>{_table(timing_rows, ['stage', 'seconds'])}"""
    return write_text_atomic(out / "report.html", _page("fusecube report", body))
