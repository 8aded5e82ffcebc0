// fusecube viewer: SVG time-series charts (no external library).
"use strict";

const SVGNS = "http://www.w3.org/2000/svg";

// Colours of the value provenance (ndvi_source flag names) and of the fallback classes.
const PROVENANCE = {
  observed: { color: "#1b7837", label: "observed" },
  s1_fused: { color: "#762a83", label: "filled from S1 radar" },
  interpolated: { color: "#e08214", label: "interpolated" },
  smoothed_only: { color: "#8c8c8c", label: "smoother only" },
  screened_out: { color: "#c51b7d", label: "screened out (fill)" },
  none: { color: "#cccccc", label: "no value" },
  filled: { color: "#e08214", label: "gap-filled" },
};

function svgEl(name, attrs, text) {
  const node = document.createElementNS(SVGNS, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

// Draw series on an SVG (viewBox sized from its width/height attributes, scaled by CSS).
// A series: {name, label, values, color, points?, colors? (per point), classes? (per point),
// dash?, width?}; opts: {min, max, digits, bands: [{from, to}], marks: [dates]}.
function chart(svg, times, series, opts) {
  const W = Number(svg.getAttribute("width")), H = Number(svg.getAttribute("height"));
  svg.setAttribute("viewBox", "0 0 " + W + " " + H);
  const m = { l: 42, r: 10, t: 8, b: 22 };
  svg.replaceChildren();
  const t = times.map((d) => Date.parse(d));
  const t0 = t[0], t1 = t[t.length - 1] || t0 + 1;
  let lo = opts.min, hi = opts.max;
  if (lo === undefined || hi === undefined) {
    const all = series.flatMap((s) => s.values.filter((v) => v !== null));
    lo = all.length ? Math.min(...all) : 0; hi = all.length ? Math.max(...all) : 1;
    if (hi - lo < 1e-6) { lo -= 1; hi += 1; }
  }
  const X = (v) => m.l + (v - t0) / (t1 - t0) * (W - m.l - m.r);
  const Y = (v) => H - m.b - (v - lo) / (hi - lo) * (H - m.t - m.b);
  for (const band of opts.bands || []) {
    if (!band.from || !band.to) continue;
    const x0 = X(Date.parse(band.from)), x1 = X(Date.parse(band.to));
    svg.append(svgEl("rect", { x: x0, y: m.t, width: Math.max(1, x1 - x0), height: H - m.t - m.b,
                               fill: "#cde8d4", class: "season-band" }));
  }
  svg.append(svgEl("line", { x1: m.l, y1: H - m.b, x2: W - m.r, y2: H - m.b, stroke: "#999" }));
  svg.append(svgEl("line", { x1: m.l, y1: m.t, x2: m.l, y2: H - m.b, stroke: "#999" }));
  for (let i = 0; i <= 4; i++) {
    const v = lo + (hi - lo) * i / 4;
    svg.append(svgEl("text", { x: 2, y: Y(v) + 3 }, v.toFixed(opts.digits === undefined ? 2 : opts.digits)));
  }
  let lastMonth = -1;
  times.forEach((d, i) => {
    const date = new Date(d), month = date.getUTCFullYear() * 12 + date.getUTCMonth();
    if (date.getUTCMonth() % 3 === 0 && month !== lastMonth) {
      lastMonth = month;
      svg.append(svgEl("text", { x: X(t[i]) - 14, y: H - 6 }, d.slice(0, 7)));
    }
  });
  for (const s of series) {
    if (s.points) {
      s.values.forEach((v, i) => {
        if (v === null) return;
        const cls = (s.classes && s.classes[i]) || ("series-" + s.name);
        svg.append(svgEl("circle", { cx: X(t[i]), cy: Y(v), r: 2.8, fill: (s.colors && s.colors[i]) || s.color,
                                     class: cls }));
      });
    } else {
      let d = "", pen = false;
      s.values.forEach((v, i) => {
        if (v === null) { pen = false; return; }
        d += (pen ? "L" : "M") + X(t[i]).toFixed(1) + "," + Y(v).toFixed(1);
        pen = true;
      });
      svg.append(svgEl("path", { d, fill: "none", stroke: s.color, "stroke-width": s.width || 1.5,
                                 "stroke-dasharray": s.dash || "", class: "series-" + s.name }));
    }
  }
  for (const date of opts.marks || []) {  // screened periods: marked, never drawn as values
    const x = X(Date.parse(date)), y = H - m.b - 6;
    const g = svgEl("g", { class: "screened" });
    g.append(svgEl("title", {}, date + ": screened out (broken composite), not an observation"));
    g.append(svgEl("path", { d: `M${x - 4},${y - 4}L${x + 4},${y + 4}M${x - 4},${y + 4}L${x + 4},${y - 4}`,
                             stroke: "#c62828", "stroke-width": 2 }));
    svg.append(g);
  }
}

// A legend row under a chart: [{color, label, dot?}].
function chartLegend(box, items) {
  box.replaceChildren(...items.map((it) => {
    const span = document.createElement("span");
    const key = document.createElement("span");
    key.className = it.dot ? "dot" : "swatch";
    key.style.background = it.color;
    span.append(key, it.label);
    return span;
  }));
}
