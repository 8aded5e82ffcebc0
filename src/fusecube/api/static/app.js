// fusecube viewer: plain JavaScript and Leaflet (served from the package), works offline.
"use strict";

const state = { token: sessionStorage.getItem("fusecube-token") || "", runId: null, catalog: null,
                runs: [], pixel: null, epoch: 0, shownState: null, map: null, overlay: null,
                marker: null, outline: null };
const $ = (id) => document.getElementById(id);

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

function progressText(run) {
  const t = run.training;
  if (run.stage === "fusion_train" && t && t.total) {
    return "training step " + t.step + "/" + t.total + (t.loss === null || t.loss === undefined ? "" : " · loss " + Number(t.loss).toFixed(4));
  }
  return run.blocks_done + "/" + run.blocks_total;
}

function progressShare(run) {
  const t = run.training;
  if (run.stage === "fusion_train" && t && t.total) return t.step / t.total;
  return run.progress || 0;
}

function runRow(run) {
  const tr = document.createElement("tr");
  tr.className = "run" + (run.id === state.runId ? " selected" : "");
  tr.dataset.id = run.id;
  tr.dataset.state = run.state;
  const o = run.overview || {};
  const method = o.used && o.requested !== o.used ? o.requested + " → " + o.used : (o.used || o.requested || "–");
  const folder = (o.out || run.out || "").split("/").filter(Boolean).pop() || "–";
  const eta = run.stage === "fusion_train" && run.training ? run.training.eta_s : run.eta_s;
  const cells = [
    { text: run.id.slice(-6), title: run.id + (run.created ? " · " + new Date(run.created * 1000).toLocaleString() : ""), cls: "id" },
    { text: run.state + (run.stage && run.state !== "done" ? " · " + run.stage : ""), cls: "state" },
    { text: o.size || "–", cls: "size" }, { text: o.dates || "–", cls: "dates" },
    { text: method, cls: "method" }, { text: folder, title: o.out || run.out, cls: "out" },
    { progress: true }, { text: duration(eta), cls: "eta" }, { actions: true },
  ];
  for (const c of cells) {
    const td = document.createElement("td");
    if (c.progress) {
      td.innerHTML = '<span class="bar"><div></div></span> ';
      td.querySelector(".bar > div").style.width = Math.round(100 * progressShare(run)) + "%";
      td.append(progressText(run));
      td.className = "progress";
    } else if (c.actions) {
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
      td.textContent = c.text;
      td.className = c.cls;
      if (c.title) td.title = c.title;
    }
    tr.append(td);
  }
  if (run.message) tr.title = run.message;
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
  $("runs").querySelector("tbody").replaceChildren(...state.runs.map(runRow));
  const current = state.runs.find((r) => r.id === state.runId);
  if (!state.runId) {
    const first = state.runs.find((r) => r.has_results);
    if (first) selectRun(first.id);
    return;
  }
  if (!current) return;
  $("run-state").textContent = "(" + current.state + (current.stage && current.state !== "done" ? ", " + current.stage : "") + ")";
  if (current.has_results && !state.catalog && !state.loading) {
    selectRun(current.id, { keepPixel: true });
  } else if (current.state !== state.shownState) {
    showProducts(current.id, state.epoch);  // products and gates are written at the end of a run
    showGates(current);
  }
  state.shownState = current.state;
}

function showGates(run) {
  const box = $("gates");
  box.replaceChildren();
  const summary = run.gate_summary;
  if (!summary || !summary.total) {
    box.textContent = run.has_results ? "no gates recorded" : "gates are counted when the run finishes";
    return;
  }
  box.append(summary.text);
  const notable = (run.gates || []).filter((g) => g.status === "fail" || g.status === "warn");
  if (notable.length) {
    const ul = document.createElement("ul");
    for (const g of notable) {
      const li = document.createElement("li");
      li.textContent = g.gate + " (" + g.stage + "): " + g.status + (g.planted ? " — planted by the synthetic demo" : "");
      li.title = g.note || g.message || "";
      if (g.planted) li.className = "planted";
      ul.append(li);
    }
    box.append(ul);
  }
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
                             height: Number($("new-height").value) },
                   gapfill: $("new-gapfill").value };
  try {
    const run = await api("/runs", { method: "POST", headers: { "Content-Type": "application/json" },
                                     body: JSON.stringify(config) });
    $("new-run-msg").textContent = "started " + run.id;
    state.runs = [run, ...state.runs.filter((r) => r.id !== run.id)];
    selectRun(run.id);  // the new run's panel: nothing of the previous run stays
    refreshRuns();
  } catch (err) { $("new-run-msg").textContent = err.message; }
}

// ------------------------------------------------------------------ the map (Leaflet)
function initMap() {
  const map = L.map("map", { zoomSnap: 0.25, attributionControl: false, worldCopyJump: false });
  L.control.scale({ imperial: false, position: "bottomleft" }).addTo(map);
  map.createPane("raster").style.zIndex = 350;  // under the marker and outline (overlay pane)
  map.setView([0, 0], 2);
  map.on("click", clickMap);
  state.map = map;
  window.fusecubeViewer = { map, state };  // for tests and the console
}

function clearRunView() {
  if (!state.map) initMap();  // first shown now: Leaflet measures a visible container
  if (state.overlay) { state.map.removeLayer(state.overlay); state.overlay = null; }
  if (state.outline) { state.map.removeLayer(state.outline); state.outline = null; }
  clearMarker();
  $("map").dataset.loaded = "false";
  $("legend").replaceChildren();
  $("layer").replaceChildren(); $("index").replaceChildren();
  $("pixel").hidden = true; $("pixel-empty").hidden = false;
  $("products").replaceChildren(); $("gates").replaceChildren();
}

function clearMarker() {
  if (state.marker) { state.map.removeLayer(state.marker); state.marker = null; }
  state.pixel = null;
}

async function selectRun(runId, opts = {}) {
  const epoch = ++state.epoch;
  const keep = opts.keepPixel && state.runId === runId ? state.pixel : null;
  state.runId = runId; state.catalog = null;
  document.querySelectorAll("tr.run").forEach((tr) => tr.classList.toggle("selected", tr.dataset.id === runId));
  $("run-panel").hidden = false;
  $("run-title").textContent = runId;
  clearRunView();
  state.map.invalidateSize();
  const run = state.runs.find((r) => r.id === runId);
  $("run-state").textContent = run ? "(" + run.state + ")" : "";
  if (run) { showGates(run); state.shownState = run.state; }
  showProducts(runId, epoch);
  if (!run || !run.has_results) {
    $("map-hint").textContent = "The maps appear when the run has finished.";
    return;
  }
  state.loading = true;
  let catalog;
  try {
    catalog = await api("/runs/" + runId + "/maps");
  } catch (err) { showError(err.message); return; } finally { state.loading = false; }
  if (epoch !== state.epoch) return;  // another run was selected meanwhile
  state.catalog = catalog;
  const names = { intensity: "cropping intensity", sos: "SOS (start of season)", pos: "POS (peak)",
                  eos: "EOS (end of season)" };
  $("layer").replaceChildren(...catalog.layers.map((l) => new Option(names[l.name] || l.name, l.name)));
  $("layer").value = catalog.layers.some((l) => l.name === "sos") ? "sos" : catalog.layers[0].name;
  const [w, s, e, n] = catalog.bounds_lonlat;
  state.bounds = L.latLngBounds([s, w], [n, e]);
  state.outline = L.rectangle(state.bounds, { color: "#555", weight: 1, fill: false, interactive: false }).addTo(state.map);
  state.map.fitBounds(state.bounds, { padding: [10, 10], animate: false });
  state.map.fire("moveend");  // vector renderers resize even when the view did not change
  fillIndex();
  $("map-hint").textContent = catalog.width + " × " + catalog.height + " px, " + catalog.crs +
    ". Click a pixel to see its curves and seasons; scroll or +/− to zoom, drag to pan.";
  if (keep) loadPixel(keep.lon, keep.lat, epoch);
}

function fillIndex() {
  const cat = state.catalog;
  const info = cat.layers.find((l) => l.name === $("layer").value);
  const items = info.index === "year" ? cat.years : cat.seasons;
  $("index-name").textContent = info.index;
  const previous = $("index").value;
  $("index").replaceChildren(...items.map((it) => new Option(it.label, it.index)));
  if (items.some((it) => String(it.index) === previous)) $("index").value = previous;
  drawMap();
}

function drawMap() {
  const cat = state.catalog;
  const info = cat.layers.find((l) => l.name === $("layer").value);
  const url = withToken("/runs/" + state.runId + "/maps/" + info.name + ".png?index=" + $("index").value);
  const box = $("map");
  box.dataset.loaded = "false";
  box.dataset.layer = info.name;
  if (!state.overlay) {
    state.overlay = L.imageOverlay(url, state.bounds, { opacity: $("opacity").value / 100, pane: "raster",
                                                        className: "phenology-overlay" });
    state.overlay.on("load", () => { $("map").dataset.loaded = "true"; });
    state.overlay.addTo(state.map);
  } else {
    state.overlay.setUrl(url);
  }
  drawLegend(info.legend);
}

function drawLegend(legend) {
  const box = $("legend");
  box.replaceChildren();
  box.dataset.kind = legend.kind;
  const title = document.createElement("div");
  title.className = "legend-title";
  title.textContent = legend.unit;
  box.append(title);
  for (const c of legend.classes || []) {
    const row = document.createElement("span");
    row.className = "legend-class";
    row.innerHTML = '<span class="swatch"></span>';
    row.querySelector(".swatch").style.background = c.color;
    row.append(c.label + (legend.kind === "categorical" && c.value === legend.classes.length - 1 ? "+" : ""));
    box.append(row);
  }
}

async function showProducts(runId, epoch) {
  const list = $("products");
  try {
    const body = await api("/runs/" + runId + "/products");
    if (epoch !== state.epoch) return;
    list.replaceChildren();
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
function clickMap(ev) {
  if (!state.catalog) return;
  if (!state.bounds.contains(ev.latlng)) {
    $("map-hint").textContent = "That point is outside the run's grid.";
    return;
  }
  loadPixel(ev.latlng.lng, ev.latlng.lat, state.epoch);
}

async function loadPixel(lon, lat, epoch) {
  try {
    const px = await api("/runs/" + state.runId + "/pixel?lon=" + lon + "&lat=" + lat);
    if (epoch !== state.epoch) return;
    clearMarker();
    state.pixel = px;
    state.marker = L.circleMarker([px.lat, px.lon], { radius: 7, color: "#e00", weight: 2, fill: false,
                                                      className: "pixel-marker", interactive: false }).addTo(state.map);
    showPixel(px);
  } catch (err) { showError(err.message); }
}

function pointSeries(px) {
  const s = px.series;
  if (s.ndvi_source && (s.ndvi_fused || s.ndvi_smooth)) {  // coloured by provenance
    const base = s.ndvi_fused || s.ndvi_smooth;
    const values = base.map((v, i) => (v === null && s.ndvi_smooth ? s.ndvi_smooth[i] : v));
    const kinds = s.ndvi_source.map((k) => k || "none");
    return { points: { name: "provenance", label: "value by provenance", values, points: true,
                       colors: kinds.map((k) => (PROVENANCE[k] || PROVENANCE.none).color),
                       classes: kinds.map((k) => (k === "observed" ? "series-ndvi" : "series-filled") + " source-" + k) },
             legend: [...new Set(kinds)].map((k) => ({ color: (PROVENANCE[k] || PROVENANCE.none).color,
                                                       label: (PROVENANCE[k] || { label: k }).label, dot: true })) };
  }
  const observed = s.ndvi || [];
  const filled = (s.ndvi_fused || []).map((v, i) => (observed[i] === null || observed[i] === undefined ? v : null));
  return { points: null, observed, filled,
           legend: [{ color: PROVENANCE.observed.color, label: "observed", dot: true },
                    { color: PROVENANCE.filled.color, label: "gap-filled", dot: true }] };
}

function showPixel(px) {
  $("pixel").hidden = false; $("pixel-empty").hidden = true;
  $("pixel-title").textContent = "row " + px.row + ", col " + px.col + " (lon " + px.lon.toFixed(5) +
    ", lat " + px.lat.toFixed(5) + ")" + (px.paddy === null ? "" : px.paddy ? " · paddy" : " · not paddy");
  const notes = [...(px.notes || [])];
  if (px.screened && px.screened.length) {
    notes.push("Screened out (broken composite, not an observation): " + px.screened.join(", ") + ".");
  }
  $("pixel-notes").textContent = notes.join(" ");
  const s = px.series;
  const lines = [];
  if (s.ndvi_fused) lines.push({ name: "ndvi_fused", label: "fused", values: s.ndvi_fused, color: "#e08214", dash: "4 3", width: 1 });
  if (s.ndvi_smooth) lines.push({ name: "ndvi_smooth", label: "smoothed", values: s.ndvi_smooth, color: "#1a9641", width: 2 });
  const band = sigmaBand(s);
  lines.push(...band);
  const pts = pointSeries(px);
  if (pts.points) {
    lines.push(pts.points);
  } else {
    lines.push({ name: "filled", label: "gap-filled", values: pts.filled, color: PROVENANCE.filled.color, points: true });
    lines.push({ name: "ndvi", label: "observed", values: pts.observed, color: PROVENANCE.observed.color, points: true });
  }
  chart($("curves"), px.time, lines, { min: -0.2, max: 1.0, marks: px.screened || [],
                                       bands: px.seasons.map((z) => ({ from: z.sos, to: z.eos })) });
  const legend = [{ color: "#1a9641", label: "smoothed" }, { color: "#e08214", label: "fused (dashed)" }, ...pts.legend,
                  { color: "#cde8d4", label: "season SOS–EOS" }];
  if (band.length) legend.push({ color: "#9e9e9e", label: "fused ± 1.96 σ (filled values)" });
  if (px.screened && px.screened.length) legend.push({ color: "#c62828", label: "× screened out" });
  chartLegend($("curve-legend"), legend);
  const radar = [];
  if (s.vv_db) radar.push({ name: "vv_db", label: "S1 VV dB", values: s.vv_db, color: "#2166ac" });
  if (s.vh_db) radar.push({ name: "vh_db", label: "S1 VH dB", values: s.vh_db, color: "#b2182b" });
  $("radar").hidden = !radar.length;
  if (radar.length) chart($("radar"), px.time, radar, { digits: 0 });
  const body = $("seasons").querySelector("tbody");
  body.replaceChildren(...px.seasons.map((z) => {
    const tr = document.createElement("tr");
    const dated = (k) => (z[k] && z[k + "_pm_days"] !== null && z[k + "_pm_days"] !== undefined
                            ? z[k] + " ± " + Math.round(z[k + "_pm_days"]) + " d" : z[k]);
    for (const v of [z.label, dated("planting"), dated("sos"), dated("pos"), dated("eos"), dated("harvest"),
                     z.length, z.amplitude]) {
      const td = document.createElement("td");
      td.textContent = v === null || v === undefined ? "–" : v;
      tr.append(td);
    }
    return tr;
  }));
  for (const e of px.empty_seasons || []) {  // why a slot is empty (season_reason)
    const tr = document.createElement("tr");
    tr.className = "empty-season";
    const label = document.createElement("td");
    label.textContent = e.label;
    const why = document.createElement("td");
    why.colSpan = 7;
    why.className = "muted";
    why.textContent = "no season: " + (e.reasons.length ? e.reasons.join(", ").replace(/_/g, " ") : "no reason recorded");
    tr.append(label, why);
    body.append(tr);
  }
  if (!px.seasons.length && !(px.empty_seasons || []).length) {
    const tr = document.createElement("tr");
    tr.innerHTML = '<td colspan="8" class="muted">no rice season detected at this pixel</td>';
    body.append(tr);
  }
}

// Lines at ndvi_fused ± 1.96 ndvi_sigma where a value was filled (the calibrated 95 % interval).
function sigmaBand(s) {
  if (!s.ndvi_sigma || !s.ndvi_fused) return [];
  const filled = (i) => (s.ndvi_source ? s.ndvi_source[i] !== "observed" : !(s.ndvi && s.ndvi[i] !== null));
  const edge = (sign) => s.ndvi_fused.map((v, i) => (v === null || s.ndvi_sigma[i] === null || !filled(i)
                                                      ? null : v + sign * 1.96 * s.ndvi_sigma[i]));
  const upper = edge(1), lower = edge(-1);
  if (!upper.some((v) => v !== null)) return [];
  return [{ name: "sigma_upper", label: "fused + 1.96 σ", values: upper, color: "#9e9e9e", dash: "1 3", width: 1 },
          { name: "sigma_lower", label: "fused − 1.96 σ", values: lower, color: "#9e9e9e", dash: "1 3", width: 1 }];
}

// ------------------------------------------------------------------ start
$("layer").addEventListener("change", fillIndex);
$("index").addEventListener("change", drawMap);
$("opacity").addEventListener("input", () => { if (state.overlay) state.overlay.setOpacity($("opacity").value / 100); });
$("new-run").addEventListener("submit", submitRun);
$("token-save").addEventListener("click", () => {
  state.token = $("token").value.trim();
  sessionStorage.setItem("fusecube-token", state.token);
  $("auth").hidden = true;
  refreshRuns();
});
refreshHealth();
refreshRuns();
setInterval(refreshRuns, 2000);
setInterval(refreshHealth, 15000);
