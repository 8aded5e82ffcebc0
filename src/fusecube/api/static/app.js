// fusecube viewer: plain JavaScript, no external libraries, works offline.
"use strict";

const state = { token: sessionStorage.getItem("fusecube-token") || "", runId: null, catalog: null,
                runs: [], pixel: null };
const $ = (id) => document.getElementById(id);
const SVGNS = "http://www.w3.org/2000/svg";

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
  if (message) setTimeout(() => { if (box.textContent === message) box.hidden = true; }, 8000);
}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (state.token) headers.Authorization = "Bearer " + state.token;
  const response = await fetch(path, Object.assign({}, options, { headers }));
  if (response.status === 401) {
    $("auth").hidden = false;
    throw new Error("This server needs a token: enter it above.");
  }
  const type = response.headers.get("content-type") || "";
  const body = type.includes("json") ? await response.json() : await response.blob();
  if (!response.ok) throw new Error((body && body.detail) || ("HTTP " + response.status));
  return body;
}

function withToken(url) {
  return state.token ? url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(state.token) : url;
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Math.round(seconds);
  return Math.floor(s / 60) + ":" + String(s % 60).padStart(2, "0");
}

// ------------------------------------------------------------------ health and runs
async function refreshHealth() {
  try {
    const response = await fetch("/health");
    const body = await response.json();
    $("health").textContent = "v" + body.version + " · " + body.status +
      (body.reasons.length ? " (" + body.reasons.join("; ") + ")" : "") +
      " · prediction: " + body.predict_method;
    if (body.auth && !state.token) $("auth").hidden = false;
  } catch (err) {
    $("health").textContent = "server unreachable";
  }
}

function runRow(run) {
  const tr = document.createElement("tr");
  tr.className = "run" + (run.id === state.runId ? " selected" : "");
  tr.dataset.id = run.id;
  tr.dataset.state = run.state;
  const pct = Math.round(100 * (run.progress || 0));
  const cells = [run.id, run.state, run.stage || "–", null, duration(run.eta_s), null];
  cells.forEach((text, i) => {
    const td = document.createElement("td");
    if (i === 3) {
      td.innerHTML = '<span class="bar"><div></div></span> ';
      td.querySelector(".bar > div").style.width = pct + "%";
      td.append(run.blocks_done + "/" + run.blocks_total);
      td.className = "progress";
    } else if (i === 5) {
      const actions = ["running", "pausing"].includes(run.state) ? ["pause", "stop"]
        : ["paused", "stopped", "interrupted", "crashed", "failed"].includes(run.state) ? ["resume"] : [];
      if (run.state === "paused") actions.push("stop");
      for (const action of actions) {
        const b = document.createElement("button");
        b.className = "small"; b.type = "button"; b.textContent = action;
        b.addEventListener("click", (ev) => { ev.stopPropagation(); control(run.id, action); });
        td.append(b);
      }
    } else {
      td.textContent = text;
    }
    tr.append(td);
  });
  tr.title = run.message || "";
  tr.addEventListener("click", () => selectRun(run.id));
  return tr;
}

async function refreshRuns() {
  try {
    state.runs = await api("/runs?limit=30");
  } catch (err) {
    showError(err.message);
    return;
  }
  const body = $("runs").querySelector("tbody");
  body.replaceChildren(...state.runs.map(runRow));
  const current = state.runs.find((r) => r.id === state.runId);
  if (!state.runId) {
    const first = state.runs.find((r) => r.has_results);
    if (first) selectRun(first.id);
  } else if (current && current.has_results && !state.catalog) {
    selectRun(current.id);
  } else if (current && current.state !== state.shownState) {
    showProducts(current.id);  // products and gates are written at the end of a run
    showGates(current);
  }
  if (current) state.shownState = current.state;
}

function showGates(run) {
  const failed = (run.gates || []).filter((g) => g.status !== "pass");
  $("gates").textContent = run.gates && run.gates.length
    ? "quality gates: " + (run.gates.length - failed.length) + "/" + run.gates.length + " pass" +
      (failed.length ? " — " + failed.map((g) => g.gate + " " + g.status).join(", ") : "") : "";
}

async function control(runId, action) {
  try {
    await api("/runs/" + runId + "/" + action, { method: "POST" });
    refreshRuns();
  } catch (err) { showError(err.message); }
}

async function submitRun(ev) {
  ev.preventDefault();
  const config = { source: { kind: "synthetic", width: Number($("new-width").value),
                             height: Number($("new-height").value) } };
  try {
    const run = await api("/runs", { method: "POST", headers: { "Content-Type": "application/json" },
                                     body: JSON.stringify(config) });
    $("new-run-msg").textContent = "started " + run.id;
    state.runId = run.id; state.catalog = null;
    refreshRuns();
  } catch (err) { $("new-run-msg").textContent = err.message; }
}

// ------------------------------------------------------------------ one run: maps and products
async function selectRun(runId) {
  state.runId = runId; state.catalog = null;
  document.querySelectorAll("tr.run").forEach((tr) => tr.classList.toggle("selected", tr.dataset.id === runId));
  $("run-panel").hidden = false;
  $("run-title").textContent = runId;
  $("pixel").hidden = true;
  const run = state.runs.find((r) => r.id === runId);
  showProducts(runId);
  if (run) { showGates(run); state.shownState = run.state; }
  if (!run || !run.has_results) {
    $("map-img").removeAttribute("src");
    $("map-hint").textContent = "The maps appear when the run has written all its blocks.";
    return;
  }
  try {
    state.catalog = await api("/runs/" + runId + "/maps");
  } catch (err) { showError(err.message); return; }
  const layer = $("layer");
  const names = { intensity: "cropping intensity", sos: "SOS (start of season)", pos: "peak of season",
                  eos: "EOS (end of season)" };
  layer.replaceChildren(...state.catalog.layers.map((l) => new Option(names[l.name] || l.name, l.name)));
  layer.value = state.catalog.layers.some((l) => l.name === "sos") ? "sos" : state.catalog.layers[0].name;
  fillIndex();
  $("map-hint").textContent = "Click a pixel to see its curves and seasons.";
}

function fillIndex() {
  const cat = state.catalog;
  const info = cat.layers.find((l) => l.name === $("layer").value);
  const items = info.index === "year" ? cat.years : cat.seasons;
  $("index-label").firstChild.textContent = info.index + " ";
  $("index").replaceChildren(...items.map((it) => new Option(it.label, it.index)));
  drawMap();
}

function drawMap() {
  const cat = state.catalog;
  const info = cat.layers.find((l) => l.name === $("layer").value);
  const img = $("map-img");
  img.dataset.loaded = "false";
  img.onload = () => { img.dataset.loaded = "true"; placeMarker(); };
  img.src = withToken("/runs/" + state.runId + "/maps/" + info.name + ".png?index=" + $("index").value);
  drawLegend(info.legend);
}

function drawLegend(legend) {
  const box = $("legend");
  box.replaceChildren();
  const title = document.createElement("div");
  title.textContent = legend.unit;
  box.append(title);
  if (legend.kind === "categorical") {
    for (const c of legend.classes) {
      const row = document.createElement("div");
      row.className = "legend-class";
      row.innerHTML = '<span class="swatch"></span>';
      row.querySelector(".swatch").style.background = c.color;
      row.append(c.label + (c.value === legend.classes.length - 1 ? "+" : ""));
      box.append(row);
    }
  } else {
    const ramp = document.createElement("span");
    ramp.className = "ramp";
    ramp.style.background = "linear-gradient(to bottom, " + legend.stops.join(", ") + ")";
    const ticks = document.createElement("span");
    ticks.className = "ticks";
    for (const t of legend.ticks) {
      const s = document.createElement("span");
      s.style.top = (100 * (t.value - legend.min) / (legend.max - legend.min)) + "%";
      s.textContent = t.label;
      ticks.append(s);
    }
    box.append(ramp, ticks);
  }
}

function placeMarker() {
  const marker = $("marker"), img = $("map-img"), cat = state.catalog;
  if (!state.pixel || !cat) { marker.hidden = true; return; }
  const sx = img.clientWidth / cat.width, sy = img.clientHeight / cat.height;
  Object.assign(marker.style, { left: state.pixel.col * sx + "px", top: state.pixel.row * sy + "px",
                                width: Math.max(sx, 6) + "px", height: Math.max(sy, 6) + "px" });
  marker.hidden = false;
}

async function showProducts(runId) {
  const list = $("products");
  list.replaceChildren();
  try {
    const body = await api("/runs/" + runId + "/products");
    for (const p of body.products) {
      const li = document.createElement("li");
      const a = document.createElement("a");
      a.href = withToken(p.url); a.textContent = p.name; a.target = "_blank";
      li.append(a, " (" + p.kind + ", " + Math.max(1, Math.round(p.size_bytes / 1024)) + " kB)");
      list.append(li);
    }
    if (!body.products.length) list.textContent = "no products yet";
  } catch (err) { showError(err.message); }
}

// ------------------------------------------------------------------ one pixel: curves and seasons
async function clickMap(ev) {
  const img = $("map-img"), cat = state.catalog;
  if (!cat) return;
  const col = Math.min(cat.width - 1, Math.floor(ev.offsetX / img.clientWidth * cat.width));
  const row = Math.min(cat.height - 1, Math.floor(ev.offsetY / img.clientHeight * cat.height));
  try {
    const px = await api("/runs/" + state.runId + "/pixel?row=" + row + "&col=" + col);
    state.pixel = px;
    placeMarker();
    showPixel(px);
  } catch (err) { showError(err.message); }
}

function el(name, attrs, text) {
  const node = document.createElementNS(SVGNS, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function chart(svg, times, series, opts) {
  const W = Number(svg.getAttribute("width")), H = Number(svg.getAttribute("height"));
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
    svg.append(el("rect", { x: x0, y: m.t, width: Math.max(1, x1 - x0), height: H - m.t - m.b,
                            fill: "#cde8d4", class: "season-band" }));
  }
  svg.append(el("line", { x1: m.l, y1: H - m.b, x2: W - m.r, y2: H - m.b, stroke: "#999" }));
  svg.append(el("line", { x1: m.l, y1: m.t, x2: m.l, y2: H - m.b, stroke: "#999" }));
  for (let i = 0; i <= 4; i++) {
    const v = lo + (hi - lo) * i / 4;
    svg.append(el("text", { x: 2, y: Y(v) + 3 }, v.toFixed(opts.digits === undefined ? 2 : opts.digits)));
  }
  let lastMonth = -1;
  times.forEach((d, i) => {
    const date = new Date(d), month = date.getUTCFullYear() * 12 + date.getUTCMonth();
    if (date.getUTCMonth() % 3 === 0 && month !== lastMonth) {
      lastMonth = month;
      svg.append(el("text", { x: X(t[i]) - 14, y: H - 6 }, d.slice(0, 7)));
    }
  });
  for (const s of series) {
    if (s.points) {
      s.values.forEach((v, i) => {
        if (v !== null) svg.append(el("circle", { cx: X(t[i]), cy: Y(v), r: 2.5, fill: s.color, class: "series-" + s.name }));
      });
    } else {
      let d = "", pen = false;
      s.values.forEach((v, i) => {
        if (v === null) { pen = false; return; }
        d += (pen ? "L" : "M") + X(t[i]).toFixed(1) + "," + Y(v).toFixed(1);
        pen = true;
      });
      svg.append(el("path", { d, fill: "none", stroke: s.color, "stroke-width": s.width || 1.5,
                              "stroke-dasharray": s.dash || "", class: "series-" + s.name }));
    }
  }
  let lx = m.l + 8;
  for (const s of series) {
    svg.append(el("rect", { x: lx, y: m.t + 2, width: 10, height: 4, fill: s.color }));
    svg.append(el("text", { x: lx + 14, y: m.t + 8 }, s.label));
    lx += 14 + 7 * s.label.length + 12;
  }
}

function showPixel(px) {
  $("pixel").hidden = false;
  $("pixel-title").textContent = "row " + px.row + ", col " + px.col + " (lon " + px.lon.toFixed(5) +
    ", lat " + px.lat.toFixed(5) + ")" + (px.paddy === null ? "" : px.paddy ? " · paddy" : " · not paddy");
  const s = px.series;
  const ndvi = [];
  if (s.ndvi) ndvi.push({ name: "ndvi", label: "observed NDVI", values: s.ndvi, color: "#444", points: true });
  if (s.ndvi_fused) ndvi.push({ name: "ndvi_fused", label: "fused", values: s.ndvi_fused, color: "#e08214", dash: "4 3" });
  if (s.ndvi_smooth) ndvi.push({ name: "ndvi_smooth", label: "smoothed", values: s.ndvi_smooth, color: "#1a9641", width: 2 });
  chart($("curves"), px.time, ndvi, { min: -0.2, max: 1.0,
                                      bands: px.seasons.map((z) => ({ from: z.sos, to: z.eos })) });
  const radar = [];
  if (s.vv_db) radar.push({ name: "vv_db", label: "S1 VV dB", values: s.vv_db, color: "#2166ac" });
  if (s.vh_db) radar.push({ name: "vh_db", label: "S1 VH dB", values: s.vh_db, color: "#b2182b" });
  $("radar").hidden = !radar.length;
  if (radar.length) chart($("radar"), px.time, radar, { digits: 0 });
  const body = $("seasons").querySelector("tbody");
  body.replaceChildren(...px.seasons.map((z) => {
    const tr = document.createElement("tr");
    for (const v of [z.label, z.planting, z.sos, z.pos, z.eos, z.harvest, z.length, z.amplitude]) {
      const td = document.createElement("td");
      td.textContent = v === null || v === undefined ? "–" : v;
      tr.append(td);
    }
    return tr;
  }));
  if (!px.seasons.length) {
    const tr = document.createElement("tr");
    tr.innerHTML = '<td colspan="8" class="muted">no rice season detected at this pixel</td>';
    body.append(tr);
  }
}

// ------------------------------------------------------------------ start
$("map-img").addEventListener("click", clickMap);
$("layer").addEventListener("change", fillIndex);
$("index").addEventListener("change", drawMap);
$("new-run").addEventListener("submit", submitRun);
$("token-save").addEventListener("click", () => {
  state.token = $("token").value.trim();
  sessionStorage.setItem("fusecube-token", state.token);
  $("auth").hidden = true;
  refreshRuns();
});
window.addEventListener("resize", placeMarker);
refreshHealth();
refreshRuns();
setInterval(refreshRuns, 2000);
setInterval(refreshHealth, 15000);
