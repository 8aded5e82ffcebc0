"""Diagnostics of the quality gates: figures, ``quality.json`` and an HTML section for the report.

Figures (PNG): valid fraction per period of S1 and S2 with the screened periods marked, an
availability heatmap (period x image row), and the mask outlined over an NDVI composite.
:func:`quality_html` returns a self-contained HTML fragment (figures embedded) that the run
report includes; :func:`write_diagnostics` writes everything into a folder atomically.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np
import xarray as xr

from fusecube.errors import OutputWriteError
from fusecube.products._mpl import pyplot
from fusecube.quality.gates import (
    GateResult,
    PeriodScreen,
    QualityReport,
    stage_results,
    variable_stats,
)
from fusecube.storage.atomic import atomic_path

STATUS_COLOURS = {"pass": "#2e7d32", "warn": "#b26a00", "fail": "#c62828", "skip": "#777"}


def _save(fig, path: Path) -> Path:
    plt = pyplot()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def _screen_dict(screen: PeriodScreen | dict) -> dict:
    return screen.__dict__ if isinstance(screen, PeriodScreen) else screen


# ----------------------------------------------------------------------------- figures
def plot_valid_fraction(screen: PeriodScreen | dict, times: list[str], path: Path,
                        s1_threshold: float | None = None) -> Path:
    """Valid fraction per period of S1 (VV and VH) and S2 (NDVI), screened periods marked."""
    plt = pyplot()
    s = _screen_dict(screen)
    dates = np.asarray(times, dtype="datetime64[D]")
    fig, ax = plt.subplots(figsize=(10, 3.2))
    if s.get("s1_valid_fraction"):
        ax.plot(dates, s["s1_valid_fraction"], "o-", ms=3, color="#6a1b9a", label="S1 (VV and VH)")
    ax.bar(dates, s.get("valid_fraction", []), width=8, color="#43a047", alpha=0.8,
           label="S2 (NDVI observed)")
    screened = sorted(set(s.get("zero_periods", [])) | set(
        i for v in s.get("constant_periods", {}).values() for i in v))
    if screened:
        ax.plot(dates[screened], np.zeros(len(screened)) + 0.02, "x", color="#c62828", ms=9,
                mew=2, label="all-zero/constant: treated as missing")
    for i in s.get("empty_periods", []):
        ax.axvspan(dates[i] - 6, dates[i] + 6, color="#999", alpha=0.25, lw=0)
    if s1_threshold is not None:
        ax.axhline(s1_threshold, color="#6a1b9a", ls=":", lw=1)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("share of pixels")
    ax.set_title("Valid observations per period (grey: no S2 observation)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    return _save(fig, path)


def plot_availability(rows: dict[str, np.ndarray], times: list[str], path: Path) -> Path:
    """Heatmap of the valid share per period (x) and image row (y), for S2 and S1."""
    plt = pyplot()
    panels = [(k, v) for k, v in (("S2 NDVI", rows.get("ndvi_rows")),
                                  ("S1 VH", rows.get("vh_rows"))) if v is not None]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.6), squeeze=False,
                             layout="constrained")
    n = len(times)
    ticks = np.linspace(0, n - 1, min(n, 6)).astype(int)
    for ax, (title, grid) in zip(axes[0], panels, strict=True):
        image = ax.imshow(np.asarray(grid).T, aspect="auto", vmin=0, vmax=1, cmap="viridis",
                          interpolation="nearest")
        ax.set_title(f"{title}: valid share per period and row")
        ax.set_xlabel("period")
        ax.set_ylabel("image row")
        ax.set_xticks(ticks, [times[i] for i in ticks], rotation=30, fontsize=7)
        fig.colorbar(image, ax=ax, fraction=0.04)
    return _save(fig, path)


def plot_mask_overlay(ndvi_composite: np.ndarray, mask: np.ndarray | None, path: Path) -> Path:
    """The mask outlined (and tinted) over the mean NDVI of the series."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    image = ax.imshow(ndvi_composite, cmap="YlGn", vmin=-0.1, vmax=0.9, interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.04, label="mean NDVI")
    if mask is not None and np.asarray(mask).any():
        m = np.asarray(mask) > 0
        tint = np.zeros((*m.shape, 4))
        tint[m] = (0.85, 0.1, 0.6, 0.15)
        ax.imshow(tint, interpolation="nearest")
        ax.contour(m.astype(float), levels=[0.5], colors="#ad1457", linewidths=1.0)
        ax.set_title(f"Mask over mean NDVI ({100 * m.mean():.1f} % of the area)")
    else:
        ax.set_title("Mean NDVI (no mask)")
    ax.set_axis_off()
    return _save(fig, path)


def make_figures(report: QualityReport, arrays: dict[str, np.ndarray],
                 mask: np.ndarray | xr.DataArray | None, out_dir: Path) -> dict[str, Path]:
    """Write the three diagnostics figures into ``out_dir``; returns their paths by name."""
    out_dir.mkdir(parents=True, exist_ok=True)
    threshold = next((g.threshold for g in report.gates if g.gate == "s1_valid_fraction"), None)
    figures = {"valid_fraction": plot_valid_fraction(
        report.screen, report.times, out_dir / "valid_fraction.png", threshold)}
    if "ndvi_rows" in arrays:
        rows = dict(arrays)
        s = report.screen
        for name, screened in (("ndvi_rows", [*s.zero_periods, *s.constant_periods.get("ndvi", [])]),
                               ("vh_rows", s.constant_periods.get("vh", []))):
            if screened and name in rows:  # screened periods are missing, show them so
                rows[name] = np.array(rows[name], dtype=float)
                rows[name][screened] = 0.0
        figures["availability"] = plot_availability(rows, report.times,
                                                    out_dir / "availability.png")
    if "ndvi_composite" in arrays:
        step = int(arrays.get("composite_step", 1))
        m = None if mask is None else np.asarray(getattr(mask, "values", mask))[::step, ::step]
        figures["mask_overlay"] = plot_mask_overlay(arrays["ndvi_composite"], m,
                                                    out_dir / "mask_overlay.png")
    return figures


# ----------------------------------------------------------------------------- html
def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return (f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(alt)}</figcaption></figure>")


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


def gate_table(gates: list[GateResult]) -> str:
    """HTML table of gate results, status coloured."""
    rows = []
    for g in gates:
        colour = STATUS_COLOURS.get(g.status, "#222")
        finding = html.escape(g.message)
        if g.status == "fail":
            finding += "".join(f"<br><i>{label}:</i> {html.escape(text)}"
                               for label, text in (("action", g.action), ("fix", g.fix)) if text)
        rows.append(f"<tr><td>{html.escape(g.gate)}</td><td>{html.escape(g.stage)}</td>"
                    f'<td style="color:{colour};font-weight:bold">{g.status}</td>'
                    f"<td>{_fmt(g.value)}</td><td>{_fmt(g.threshold)}</td>"
                    f'<td style="text-align:left">{finding}</td></tr>')
    head = "".join(f"<th>{h}</th>" for h in ("gate", "stage", "status", "value", "threshold",
                                             "finding"))
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def mask_table(mask: dict | None) -> str:
    """HTML summary of a mask report (coverage, repairs)."""
    if not mask:
        return "<p>No mask: every pixel is processed.</p>"
    rows = [("source", mask.get("source")), ("kind", mask.get("kind")),
            ("coverage", f"{mask.get('pixels', 0)} pixels, {mask.get('km2', 0):.2f} km², "
                         f"{mask.get('percent_of_aoi', 0):.2f} % of the area of interest")]
    if mask.get("kind") == "vector":
        rows.append(("features", f"{mask.get('n_read')} of {mask.get('n_features')} read near the "
                                 f"area; {mask.get('n_used')} used"))
        rows.append(("repairs", f"{mask.get('n_invalid')} invalid repaired, "
                                f"{mask.get('n_non_polygon')} non-polygon dropped, "
                                f"{mask.get('n_null')} empty dropped"
                                + ("; Z coordinates dropped" if mask.get("had_z") else "")))
    if mask.get("kind") == "raster" and mask.get("window"):
        rows.append(("window read", f"{mask['window']} of {mask.get('file_shape')} "
                                    f"({mask.get('bytes_read', 0) / 1e6:.2f} MB)"))
    body = "".join(f"<tr><td>{html.escape(str(k))}</td><td style='text-align:left'>"
                   f"{html.escape(str(v))}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def quality_html(report: QualityReport, figures: dict[str, Path] | None = None) -> str:
    """The quality section of the HTML report: summary, every gate, the mask, the figures.

    Args:
        report: The quality report.
        figures: Figure paths from :func:`make_figures` (embedded as base64 PNG).

    Returns:
        An HTML fragment starting with ``<h2>Quality gates</h2>``.
    """
    gates = report.gates
    counts = {s: sum(g.status == s for g in gates) for s in ("pass", "warn", "fail", "skip")}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    mode = ("strict: a failing gate stops the run" if report.strict else
            "default: what fails is masked (NaN), the run continues")
    figures = figures or {}
    captions = {"valid_fraction": "Valid share of pixels per period, S1 and S2",
                "availability": "Availability per period and image row",
                "mask_overlay": "Paddy mask over the mean NDVI"}
    imgs = "".join(_img(figures[k], captions[k]) for k in captions if k in figures)
    return (f"<h2>Quality gates</h2><p>{len(gates)} gates: {summary}. Mode {mode}.</p>"
            f"{gate_table(gates)}<h3>Mask</h3>{mask_table(report.mask)}{imgs}")


def write_diagnostics(report: QualityReport, arrays: dict[str, np.ndarray],
                      mask: np.ndarray | xr.DataArray | None, out_dir: str | Path) -> dict[str, Path]:
    """Write ``quality.json``, ``quality.md``, ``quality.html`` and the figures into ``out_dir``.

    The folder is written under a temporary name and swapped in when complete, so a failure
    leaves a previous diagnostics folder untouched.

    Returns:
        Paths of the written files by name (inside ``out_dir``).
    """
    out_dir = Path(out_dir)
    names: dict[str, str] = {}

    def write(folder: Path) -> None:
        figures = make_figures(report, arrays, mask, folder)
        report.write_json(folder / "quality.json")
        (folder / "quality.md").write_text(report.to_markdown() + "\n")
        page = (f"<!doctype html><html><head><meta charset='utf-8'><title>fusecube quality"
                f"</title></head><body>{quality_html(report, figures)}</body></html>")
        (folder / "quality.html").write_text(page)
        names.update({k: p.name for k, p in figures.items()})
        names.update(json="quality.json", markdown="quality.md", html="quality.html")

    try:
        with atomic_path(out_dir, folder=True) as staged:
            staged.mkdir()
            write(staged)
    except OutputWriteError:
        raise
    except OSError as exc:
        raise OutputWriteError(
            f"Cannot write the quality diagnostics to {out_dir} ({exc}); choose a writable "
            "folder with free space (--out)."
        ) from exc
    return {k: out_dir / v for k, v in names.items()}


# ----------------------------------------------------------------------------- runs
def diagnostic_arrays(cube: xr.Dataset) -> dict[str, np.ndarray]:
    """Per-(period, row) availability of NDVI and VH and the mean NDVI, in one pass."""
    from fusecube.cube import NDVI, VH

    stats = variable_stats({"ndvi": (cube[NDVI], -1.0, 1.0, True), "vh": (cube[VH], 0.0, np.inf,
                                                                          False)})
    return {"ndvi_rows": stats["ndvi"]["row_valid"], "vh_rows": stats["vh"]["row_valid"],
            "ndvi_composite": stats["ndvi"]["composite"],
            "composite_step": np.asarray(stats["ndvi"]["composite_step"])}


def write_run_quality(result, inputs, config) -> tuple[Path, str]:
    """Quality diagnostics of a finished run, for the run report.

    Describes exactly what the run used: the input-gate results, mask and thresholds of its
    :class:`~fusecube.runner.inputs.RunInputs` and the stage-gate counts its blocks left in the
    screen. It reads the input cube once more for the figures (availability per row, mean NDVI),
    writes ``<out>/quality/`` (``quality.json``, ``quality.md``, ``quality.html``, figures) and
    returns the HTML section.

    Args:
        result: The runner's ``RunResult`` (uses ``out``).
        inputs: The run's resolved inputs (cube path, mask and its report, screen).
        config: The ``RunConfig`` of the run (uses ``strict``).

    Returns:
        ``(path of quality.json, HTML fragment for the report)``.
    """
    from fusecube.cube import TIME, read_cube

    cube = read_cube(inputs.cube_path, chunks={})
    times = [np.datetime_as_string(t, unit="D") for t in cube[TIME].values]
    report = QualityReport(cube=str(inputs.cube_path), strict=config.strict, times=times,
                           screen=inputs.screen, mask=inputs.mask_report)
    report.stage_results = [g.to_dict() for g in stage_results(inputs.screen)]
    paths = write_diagnostics(report, diagnostic_arrays(cube), inputs.mask,
                              Path(result.out) / "quality")
    figures = {k: v for k, v in paths.items() if k in ("valid_fraction", "availability",
                                                       "mask_overlay")}
    return paths["json"], quality_html(report, figures)
