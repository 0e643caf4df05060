// One reader's tuning page: charts drawn here as SVG from /console/api/tuning/READER, polled.
// Suggestions come with their evidence; a profile changes only when the technician clicks Apply.
"use strict";

const csrf = document.querySelector('meta[name="csrf-token"]').content;
const reader = document.querySelector('meta[name="reader"]').content;
const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
const COLORS = ["#0969da", "#cf222e", "#1a7f37", "#8250df", "#bf8700", "#1b7c83", "#953800", "#6e7781"];
const W = 640, H = 220, LEFT = 44, RIGHT = 8, TOP = 8, BOTTOM = 24;
const POLL_MS = 5000;
// What a load costs, read by bench/bench_console.py: fetch and JSON, then drawing (script time).
window.tuningStats = { loads: 0, points: 0, fetchMs: 0, renderMs: 0, maxRenderMs: 0 };

function colorOf(port) { return COLORS[(Number(port) - 1 + COLORS.length) % COLORS.length]; }

function el(name, attrs, parent) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (parent) parent.appendChild(node);
  return node;
}

function two(n) { return (n < 10 ? "0" : "") + n; }
function clock(s) { const d = new Date(s * 1000); return two(d.getHours()) + ":" + two(d.getMinutes()); }

const MIN_SPAN_S = 300;

// The x axis: the window, or less while the history is younger (at least MIN_SPAN_S), so the
// first minutes after a start fill the chart instead of its right-hand edge.
function spanStart(data) {
  let first = Infinity;
  for (const s of Object.values(data.antennas)) if (s.t.length) first = Math.min(first, s.t[0]);
  return Math.max(data.now_s - data.window_s, Math.min(first, data.now_s - MIN_SPAN_S));
}

// Draws one series per antenna: x is time over the span, y the value (null values skipped).
function drawChart(svg, data, key, fixedMin) {
  svg.textContent = "";
  const end = data.now_s, start = spanStart(data);
  let lo = Infinity, hi = -Infinity;
  for (const s of Object.values(data.antennas)) {
    for (const v of s[key]) if (v !== null) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  }
  if (lo === Infinity) { lo = fixedMin ?? 0; hi = lo + 1; }
  if (fixedMin !== null) lo = Math.min(lo, fixedMin);
  if (hi - lo < 1) { hi = lo + 1; }
  const pad = (hi - lo) * 0.1;
  lo = fixedMin === 0 ? 0 : Math.floor(lo - pad); hi = Math.ceil(hi + pad);
  const x = (t) => LEFT + ((t - start) / (end - start)) * (W - LEFT - RIGHT);
  const y = (v) => TOP + (1 - (v - lo) / (hi - lo)) * (H - TOP - BOTTOM);
  for (let i = 0; i <= 4; i++) {
    const v = lo + ((hi - lo) * i) / 4;
    el("line", { x1: LEFT, x2: W - RIGHT, y1: y(v), y2: y(v), class: "grid-line" }, svg);
    el("text", { x: LEFT - 4, y: y(v) + 4, "text-anchor": "end" }, svg).textContent = (Math.round(v * 10) / 10).toString();
  }
  for (let i = 0; i <= 6; i++) {
    const t = start + ((end - start) * i) / 6;
    const label = end - start < 1200 ? clock(t) + ":" + two(new Date(t * 1000).getSeconds()) : clock(t);
    el("text", { x: x(t), y: H - 6, "text-anchor": "middle" }, svg).textContent = label;
  }
  el("line", { x1: LEFT, x2: LEFT, y1: TOP, y2: H - BOTTOM, class: "axis" }, svg);
  el("line", { x1: LEFT, x2: W - RIGHT, y1: H - BOTTOM, y2: H - BOTTOM, class: "axis" }, svg);
  for (const [port, s] of Object.entries(data.antennas)) {
    const group = el("g", { "data-antenna": port }, svg);
    const points = [];
    s.t.forEach((t, i) => {
      const v = s[key][i];
      if (v === null || t < start) return;
      // Bucket start + half a bucket: the point sits in the middle of its 10 seconds.
      const px = x(Math.min(t + data.bucket_s / 2, end)), py = y(v);
      points.push(px.toFixed(1) + "," + py.toFixed(1));
      const dot = el("circle", { cx: px.toFixed(1), cy: py.toFixed(1), r: 2.5, fill: colorOf(port) }, group);
      el("title", {}, dot).textContent = "antenna " + port + " at " + clock(t) + ": " + v;
      window.tuningStats.points++;
    });
    el("polyline", { points: points.join(" "), stroke: colorOf(port) }, group);
  }
}

function legend(data) {
  const box = $("chart-legend");
  box.textContent = "";
  const ports = Object.keys(data.antennas);
  if (!ports.length) { box.textContent = "no reads by this reader in the last 30 minutes"; return; }
  for (const port of ports) {
    const span = document.createElement("span");
    span.textContent = "antenna " + port;
    span.style.color = colorOf(port);
    box.appendChild(span);
  }
}

function cell(tr, text) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "-" : String(text);
  tr.appendChild(td);
  return td;
}

function fillTags(table, tags) {
  const body = table.tBodies[0];
  body.textContent = "";
  for (const t of tags) {
    const tr = document.createElement("tr");
    tr.dataset.epc = t.epc;
    cell(tr, t.uri || t.epc).className = "epc";
    cell(tr, t.reads);
    cell(tr, t.in_view_s < 90 ? t.in_view_s.toFixed(0) + " s" : (t.in_view_s / 60).toFixed(1) + " min");
    cell(tr, Object.entries(t.antennas).map(([p, r]) => p + ": " + (r === null ? "-" : r)).join(" · "));
    body.appendChild(tr);
  }
}

async function post(path, body) {
  const response = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
    body: JSON.stringify(body),
    credentials: "same-origin",
  });
  if (response.status === 401) location.href = "/login";
  try { return await response.json(); } catch (e) { return { ok: false, error: "HTTP " + response.status }; }
}

function showResult(text, cls) { const r = $("suggestion-result"); r.textContent = text; r.className = "result " + cls; }

async function review(option) {
  const r = await post("/console/api/profiles/check", { reader: reader, profile: option.profile });
  if (!r.ok) { showResult("not valid: " + (r.errors || [r.error]).join("\n"), "bad"); return; }
  const changes = r.changes.map(([path, a, b]) => path + ": " + JSON.stringify(a) + " → " + JSON.stringify(b));
  showResult("against " + (r.in_force ? r.in_force.name + " v" + r.in_force.version : "nothing in force") + ":\n" + (changes.join("\n") || "no differences"), "ok");
}

async function apply(option, button) {
  showResult("applying " + option.label + " to " + reader + "… the reader restarts its inventory, then the read rate is watched", "busy");
  button.disabled = true;
  try {
    const r = await post("/console/api/profiles/apply", { reader: reader, profile: option.profile, requested_by: "tuning page" });
    if (r.outcome === "applied") showResult("applied: " + r.new.name + " v" + r.new.version + " is in force on " + r.reader, "ok");
    else if (r.outcome === "invalid" || r.error) showResult("not applied: " + (r.reason || r.error), "bad");
    else showResult(r.outcome + ": " + (r.reason || "") + "\nrolled back to " + r.old.name + " v" + r.old.version, "bad");
  } finally {
    button.disabled = false;
    load();
  }
}

let shownSuggestions = "";
function renderSuggestions(suggestions) {
  const key = JSON.stringify(suggestions);
  if (key === shownSuggestions) return;  // do not rebuild the buttons under the technician's pointer
  shownSuggestions = key;
  const list = $("suggestion-list");
  list.textContent = "";
  if (!suggestions.length) { const p = document.createElement("p"); p.className = "none"; p.textContent = "nothing to suggest from what is in view now"; list.appendChild(p); return; }
  for (const s of suggestions) {
    const box = document.createElement("div");
    box.className = "suggestion";
    box.dataset.suggestion = s.id;
    const head = document.createElement("p");
    head.textContent = s.text;
    box.appendChild(head);
    const ul = document.createElement("ul");
    for (const e of s.evidence) { const li = document.createElement("li"); li.textContent = e; ul.appendChild(li); }
    box.appendChild(ul);
    for (const option of s.options) {
      const reviewButton = document.createElement("button");
      reviewButton.type = "button";
      reviewButton.className = "review";
      reviewButton.textContent = "Review: " + option.label;
      reviewButton.addEventListener("click", () => review(option));
      const applyButton = document.createElement("button");
      applyButton.type = "button";
      applyButton.className = "apply";
      applyButton.textContent = "Apply";
      applyButton.addEventListener("click", () => apply(option, applyButton));
      const line = document.createElement("div");
      line.appendChild(reviewButton);
      line.appendChild(applyButton);
      box.appendChild(line);
    }
    list.appendChild(box);
  }
}

async function load() {
  try {
    const started = performance.now();
    const response = await fetch("/console/api/tuning/" + encodeURIComponent(reader), { credentials: "same-origin" });
    if (response.status === 401) { location.href = "/login"; return; }
    const data = await response.json();
    const fetched = performance.now();
    $("profile-in-force").textContent = data.profile || "none (not an LLRP reader, or not connected yet)";
    drawChart($("reads-chart"), data, "reads_per_s", 0);
    drawChart($("rssi-chart"), data, "rssi_dbm", null);
    legend(data);
    fillTags($("crossing-table"), data.crossing);
    fillTags($("parked-table"), data.parked);
    $("crossing-count").textContent = data.crossing.length;
    $("parked-count").textContent = data.parked.length;
    $("passing-count").textContent = data.passing;
    renderSuggestions(data.suggestions);
    $("tuning-status").textContent = "updated " + clock(data.now_s) + ":" + two(new Date(data.now_s * 1000).getSeconds());
    $("tuning-status").className = "pill live";
    const drawnMs = performance.now() - fetched;
    window.tuningStats.fetchMs += fetched - started;
    window.tuningStats.renderMs += drawnMs;
    window.tuningStats.maxRenderMs = Math.max(window.tuningStats.maxRenderMs, drawnMs);
    window.tuningStats.loads++;
  } catch (e) {
    $("tuning-status").textContent = "not answering";
    $("tuning-status").className = "pill lost";
  }
}

// -- the A/B trial -----------------------------------------------------------------------------

async function loadProfiles() {
  const response = await fetch("/console/api/profiles", { credentials: "same-origin" });
  const data = await response.json();
  for (const id of ["trial-a", "trial-b"]) {
    const select = $(id);
    select.textContent = "";
    for (const p of data.available || []) {
      if (p.error) continue;
      const option = document.createElement("option");
      option.value = p.name;
      option.textContent = p.name + " v" + p.version;
      select.appendChild(option);
    }
  }
  if ($("trial-b").options.length > 1) $("trial-b").selectedIndex = 1;
}

function fmtMap(m) { return Object.entries(m || {}).map(([k, v]) => k + ": " + (v === null ? "-" : v)).join(" · "); }

function renderTrial(data) {
  const t = data.trial;
  if (!t) { $("trial-state").textContent = "none"; return; }
  $("trial-state").textContent = t.state + " (" + t.a + " vs " + t.b + ", " + t.rounds + " × " + t.phase_s + " s each)";
  $("trial-phase-now").textContent = t.phase ? "now: " + t.phase + ", " + Math.max(0, Math.round(t.phase_ends_s - Date.now() / 1000)) + " s left" : (t.restored ? "restored " + t.restored : "") + (t.reason ? " · " + t.reason : "");
  const body = $("trial-table").tBodies[0];
  body.textContent = "";
  for (const p of t.phases) {
    const tr = document.createElement("tr");
    const minutes = (p.ended_s - p.started_s) / 60;
    cell(tr, p.profile); cell(tr, p.name); cell(tr, minutes.toFixed(1)); cell(tr, p.crossings);
    cell(tr, (p.crossings / Math.max(minutes, 1e-9)).toFixed(1)); cell(tr, p.confidence);
    cell(tr, p.parked_reads); cell(tr, fmtMap(p.reads_per_s)); cell(tr, fmtMap(p.rssi_dbm));
    body.appendChild(tr);
  }
  $("trial-verdict").textContent = t.comparison.verdict;
  const evidence = $("trial-evidence");
  evidence.textContent = "";
  for (const e of t.comparison.evidence) { const li = document.createElement("li"); li.textContent = e; evidence.appendChild(li); }
  const keep = $("trial-keep");
  keep.textContent = "";
  if (["done", "stopped"].includes(t.state) && t.comparison.A && t.comparison.B) {
    for (const [label, shown] of [["A", t.a], ["B", t.b]]) {
      const name = shown.replace(/ v\d+$/, "");
      const button = document.createElement("button");
      button.type = "button";
      button.className = "keep-" + label;
      button.textContent = "Keep " + label + " (" + name + ")";
      button.addEventListener("click", async () => {
        showResult("applying " + name + "…", "busy");
        const r = await post("/console/api/profiles/apply", { reader: reader, name: name, requested_by: "tuning page" });
        showResult(r.ok ? "applied: " + r.new.name + " v" + r.new.version + " is in force on " + r.reader : "not applied: " + (r.reason || r.error || r.outcome), r.ok ? "ok" : "bad");
      });
      keep.appendChild(button);
    }
  }
}

async function loadTrial() {
  const response = await fetch("/console/api/trial", { credentials: "same-origin" });
  if (response.ok) renderTrial(await response.json());
}

$("trial-start").addEventListener("click", async () => {
  const choice = { a: $("trial-a").value, b: $("trial-b").value };
  const r = await post("/console/api/trial/start", {
    reader: reader, a: choice.a, b: choice.b,
    phase_s: Number($("trial-phase").value), rounds: Number($("trial-rounds").value), requested_by: "tuning page",
  });
  if (!r.ok) { $("trial-state").textContent = "not started: " + r.error; return; }
  renderTrial(r);
});

$("trial-stop").addEventListener("click", async () => { await post("/console/api/trial/stop", {}); loadTrial(); });

load();
loadProfiles();
loadTrial();
setInterval(load, POLL_MS);
setInterval(loadTrial, 1000);
