// The technicians' console: one EventSource for live state and tags, fetch() for the rest.
// Every change carries the CSRF token from the page's <meta>; data is only ever set as text.
"use strict";

const csrf = document.querySelector('meta[name="csrf-token"]').content;
const loginRequired = document.querySelector('meta[name="login-required"]').content === "true";
const $ = (id) => document.getElementById(id);
// Counters the browser tests and the bench read.
window.consoleStats = { messages: 0, tagMessages: 0, rowsApplied: 0, renders: 0, renderMs: 0, full: 0 };

function cell(tr, text, cls) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "-" : String(text);
  if (cls) td.className = cls;
  tr.appendChild(td);
  return td;
}

function fmtTime(s) {
  if (!s) return "-";
  // Not toLocaleTimeString: it builds a formatter per call, which costs a frame at 300 rows.
  const d = new Date(s * 1000);
  const two = (n) => (n < 10 ? "0" : "") + n;
  return two(d.getHours()) + ":" + two(d.getMinutes()) + ":" + two(d.getSeconds()) + "." + String(d.getMilliseconds()).padStart(3, "0");
}

function fmtAge(s) {
  if (s === null || s === undefined) return "-";
  return s < 90 ? s.toFixed(1) + " s" : (s / 60).toFixed(1) + " min";
}

async function post(path, body) {
  const response = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
    body: JSON.stringify(body),
    credentials: "same-origin",
  });
  let data = {};
  try { data = await response.json(); } catch (e) { data = { ok: false, error: "HTTP " + response.status }; }
  if (response.status === 401) location.href = "/login";
  return data;
}

async function get(path) {
  const response = await fetch(path, { credentials: "same-origin" });
  if (response.status === 401) { location.href = "/login"; return {}; }
  return response.json();
}

// -- live tags ---------------------------------------------------------------------------------

const tags = new Map();     // hex -> row array
const tagRows = new Map();  // hex -> <tr>
let pending = null;         // coalesced updates waiting for the next animation frame

function queueTags(update) {
  if (update.full) { pending = { full: true, upsert: new Map(), remove: new Set() }; }
  else if (!pending) { pending = { full: false, upsert: new Map(), remove: new Set() }; }
  for (const row of update.upsert) { pending.upsert.set(row[0], row); pending.remove.delete(row[0]); }
  for (const hex of update.remove) { pending.remove.add(hex); pending.upsert.delete(hex); }
  $("tags-in-view").textContent = update.in_view;
  $("tags-matching").textContent = update.matching;
  requestAnimationFrame(renderTags);
}

// The server sends at most this many rows (the first in EPC order that fit the filter): a
// technician reads a few dozen and filters for the rest; 2,000 live rows cost far more to draw.
const MAX_ROWS = 300;

function tagValues(row) {
  return [row[1] || row[0], row[2], row[3], row[4], row[5], fmtTime(row[6])];
}

function renderTags() {
  if (!pending) return;
  const started = performance.now();
  const work = pending;
  pending = null;
  const body = $("tags-table").tBodies[0];
  let membership = work.full || work.remove.size > 0;
  if (work.full) { tags.clear(); tagRows.clear(); body.textContent = ""; }
  for (const hex of work.remove) {
    tags.delete(hex);
    const tr = tagRows.get(hex);
    if (tr) { tr.remove(); tagRows.delete(hex); }
  }
  for (const [hex, row] of work.upsert) {
    if (!tags.has(hex)) membership = true;
    tags.set(hex, row);
  }
  if (membership) {
    // Rows in EPC order, so they do not jump about while a technician reads them.
    const wanted = [...tags.keys()].sort().slice(0, MAX_ROWS);
    const keep = new Set(wanted);
    for (const [hex, tr] of tagRows) if (!keep.has(hex)) { tr.remove(); tagRows.delete(hex); }
    const ordered = document.createDocumentFragment();
    for (const hex of wanted) {
      let tr = tagRows.get(hex);
      if (!tr) {
        const row = tags.get(hex);
        tr = document.createElement("tr");
        tr.dataset.epc = hex;
        tagValues(row).forEach((v, i) => cell(tr, v, i === 0 ? "epc" : ""));
        tr.firstChild.title = hex + (row[7] ? "  GTIN " + row[7] + " serial " + row[8] : "");
        tagRows.set(hex, tr);
      }
      ordered.appendChild(tr);
    }
    body.appendChild(ordered);
  }
  for (const [hex, row] of work.upsert) {
    const tr = tagRows.get(hex);
    if (!tr) continue;
    const values = tagValues(row);
    const cells = tr.children;
    for (let i = 1; i < values.length; i++) {
      const text = values[i] === null || values[i] === undefined ? "-" : String(values[i]);
      if (cells[i].textContent !== text) cells[i].textContent = text;
    }
    window.consoleStats.rowsApplied++;
  }
  $("tags-shown").textContent = tagRows.size;
  window.consoleStats.renders++;
  window.consoleStats.renderMs += performance.now() - started;
}

// -- state -------------------------------------------------------------------------------------

function renderState(state) {
  const body = $("readers-table").tBodies[0];
  body.textContent = "";
  for (const r of state.readers) {
    const tr = document.createElement("tr");
    tr.dataset.reader = r.reader;
    const link = document.createElement("a");
    link.href = "/console/tuning/" + encodeURIComponent(r.reader);
    link.textContent = r.reader;
    link.title = "tune this reader: read rate and RSSI per antenna, parked tags, suggestions";
    cell(tr, "").appendChild(link);
    cell(tr, r.kind);
    cell(tr, r.state, "state state-" + r.state);
    cell(tr, r.profile);
    const rates = Object.entries(r.reads_per_s || {}).map(([port, rate]) => port + ": " + rate + "/s").join(" · ");
    cell(tr, rates || "-", "rates");
    cell(tr, r.reconnects);
    cell(tr, r.bad_input);
    cell(tr, r.io || "-");
    if (r.last_error) tr.title = r.last_error;
    body.appendChild(tr);
  }
  renderActivity(state);
  renderLink(state);
}

let activityShown = null;  // what the activity table shows now: (version, filter)
function renderActivity(state) {
  const show = $("activity-filter").value;
  const key = state.activity_version + "/" + show;
  if (key === activityShown) return;  // unchanged: do not rebuild the table twice a second
  activityShown = key;
  const activity = $("activity-table").tBodies[0];
  activity.textContent = "";
  const entries = state.activity.filter((e) =>
    show === "all" || (show === "rfid" && (e.source === "rfid" || !e.seq)) || (show === "none" && !e.seq));
  for (const e of entries.slice(0, 50)) {
    const tr = document.createElement("tr");
    cell(tr, fmtTime(e.at_s));
    cell(tr, e.station);
    cell(tr, e.item, "epc");
    cell(tr, (e.zones || []).join(" → "));
    cell(tr, e.direction);
    cell(tr, e.confidence === null || e.confidence === undefined ? "-" : Number(e.confidence).toFixed(2));
    cell(tr, e.reads);
    if (e.seq) cell(tr, e.what + " #" + e.seq + (e.rma ? " for " + e.rma : "") + (e.expected === false ? " (unexpected)" : ""), "outcome-applied");
    else cell(tr, "no movement: " + e.reason, "none");
    activity.appendChild(tr);
  }
}

function renderLink(state) {
  const b = state.broker || {}, buf = state.buffer || {};
  const link = [
    ["broker", b.connected ? "connected" : "DOWN" + (b.last_error ? " (" + b.last_error + ")" : "")],
    ["last ack", b.last_ack_at_s ? fmtTime(b.last_ack_at_s) : "none yet"],
    ["backlog (undelivered)", buf.pending],
    ["oldest unacked", fmtAge(buf.oldest_pending_age_s)],
    ["in flight", b.inflight],
    ["published / delivered", (b.published ?? "-") + " / " + (b.delivered ?? "-")],
    ["buffer", buf.used_bytes !== undefined ? (buf.used_bytes / 1e6).toFixed(1) + " of " + (buf.budget_bytes / 1e6).toFixed(0) + " MB" : "-"],
    ["gaps", buf.gaps_total],
    ["tags in view (table)", state.tags_in_view + (state.tags_evicted ? ", " + state.tags_evicted + " evicted when full" : "")],
  ];
  fillList($("link-list"), link);
  const kpi = state.kpi || {};
  fillList($("kpi-list"), Object.entries(kpi).filter(([, v]) => typeof v !== "object").map(([k, v]) => [k, v]));
}

function fillList(dl, pairs) {
  dl.textContent = "";
  for (const [k, v] of pairs) {
    const dt = document.createElement("dt"); dt.textContent = k;
    const dd = document.createElement("dd"); dd.textContent = v === null || v === undefined ? "-" : String(v);
    dl.appendChild(dt); dl.appendChild(dd);
  }
}

// -- the stream --------------------------------------------------------------------------------

let source = null;
function connect() {
  if (source) source.close();
  const filter = $("tag-filter").value.trim();
  source = new EventSource("/console/stream?filter=" + encodeURIComponent(filter));
  source.addEventListener("open", () => { $("feed-status").textContent = "live"; $("feed-status").className = "pill live"; });
  source.addEventListener("error", () => { $("feed-status").textContent = "reconnecting…"; $("feed-status").className = "pill lost"; });
  source.addEventListener("state", (ev) => { window.consoleStats.messages++; renderState(JSON.parse(ev.data)); });
  source.addEventListener("tags", (ev) => {
    const update = JSON.parse(ev.data);
    window.consoleStats.tagMessages++;
    if (update.full) window.consoleStats.full++;
    queueTags(update);
  });
}

let filterTimer = null;
$("tag-filter").addEventListener("input", () => { clearTimeout(filterTimer); filterTimer = setTimeout(connect, 300); });

// -- profiles ----------------------------------------------------------------------------------

function profileRequest() {
  const body = { reader: $("profile-reader").value };
  const text = $("profile-text").value;
  if (text.trim()) body.text = text; else body.name = $("profile-name").value;
  return body;
}

function showResult(el, text, cls) { el.textContent = text; el.className = "result " + cls; }

function describeChanges(changes) {
  if (!changes.length) return "no differences";
  return changes.map(([path, a, b]) => path + ": " + JSON.stringify(a) + " → " + JSON.stringify(b)).join("\n");
}

$("profile-validate").addEventListener("click", async () => {
  const r = await post("/console/api/profiles/check", profileRequest());
  if (r.ok) showResult($("profile-result"), "valid: " + r.profile.name + " v" + r.profile.version + " (" + r.profile.model + ")", "ok");
  else showResult($("profile-result"), "invalid: " + (r.errors || [r.error]).join("\n"), "bad");
});

$("profile-diff").addEventListener("click", async () => {
  const r = await post("/console/api/profiles/check", profileRequest());
  if (!r.ok) { showResult($("profile-result"), "invalid: " + (r.errors || [r.error]).join("\n"), "bad"); return; }
  const head = r.in_force ? "in force on " + r.reader + ": " + r.in_force.name + " v" + r.in_force.version + "\n" : "";
  showResult($("profile-result"), head + describeChanges(r.changes), "ok");
});

$("profile-apply").addEventListener("click", async () => {
  const request = profileRequest();
  if (!loginRequired) request.requested_by = $("requested-by").value;
  showResult($("profile-result"), "applying to " + request.reader + "… the reader restarts its inventory, then the read rate is watched", "busy");
  $("profile-apply").disabled = true;
  try {
    const r = await post("/console/api/profiles/apply", request);
    let text;
    if (r.outcome === "applied") text = "applied: " + r.new.name + " v" + r.new.version + " is in force on " + r.reader;
    else if (r.outcome === "invalid" || r.error) text = "not applied: " + (r.reason || r.error);
    else text = r.outcome + ": " + (r.reason || "") + "\nrolled back to " + r.old.name + " v" + r.old.version + " (rollback " + r.rollback + ")";
    showResult($("profile-result"), text, r.ok ? "ok" : "bad");
  } finally {
    $("profile-apply").disabled = false;
    loadProfiles();
  }
});

async function loadProfiles() {
  const [p, h] = await Promise.all([get("/console/api/profiles"), get("/console/api/profiles/history")]);
  const avail = $("available-table").tBodies[0];
  avail.textContent = "";
  for (const a of p.available || []) {
    const tr = document.createElement("tr");
    cell(tr, a.name); cell(tr, a.model); cell(tr, a.version);
    cell(tr, (a.antennas || []).map((x) => x.port + "@" + x.power_dbm + "dBm").join(" "));
    cell(tr, a.error ? "no: " + a.error : (a.problems && a.problems.length ? "no: " + a.problems.join("; ") : "yes"));
    avail.appendChild(tr);
  }
  const hist = $("history-table").tBodies[0];
  hist.textContent = "";
  for (const e of h.history || []) {
    const tr = document.createElement("tr");
    cell(tr, e.at); cell(tr, e.reader);
    cell(tr, e.old.name + " v" + e.old.version + " → " + e.new.name + " v" + e.new.version);
    cell(tr, e.outcome + (e.rollback ? " (rolled back: " + e.rollback + ")" : ""), "outcome-" + e.outcome);
    cell(tr, e.reason); cell(tr, e.requested_by + " (" + e.source + ")"); cell(tr, e.client);
    hist.appendChild(tr);
  }
}

// -- expected returns --------------------------------------------------------------------------

$("expected-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const r = await get("/console/api/expected?q=" + encodeURIComponent($("expected-query").value));
  if (r.error) { showResult($("expected-result"), r.error, "bad"); return; }
  const lines = [];
  lines.push(r.announced ? "announced" + (r.rma ? " in " + r.rma.rma + (r.rma.customer ? " (" + r.rma.customer + ")" : "") : "") : "not announced (or no longer open)");
  if (r.line) lines.push("line: " + JSON.stringify(r.line));
  if (r.kind === "rma" && r.rma) for (const l of r.rma.lines) lines.push("  " + (l.epc || (l.gtin + " " + (l.serial || ""))) + ": " + l.received + " of " + l.qty + " arrived");
  lines.push(r.arrived ? "arrived" : "not arrived yet (as far as the recent history shows)");
  for (const e of r.seen || []) lines.push("seen " + fmtTime(e.at_s) + " at " + e.station + ": " + (e.seq ? e.what + " #" + e.seq : "no movement: " + e.reason));
  for (const t of r.in_view || []) lines.push("in view now: reader " + t[2] + ", antennas " + t[3]);
  showResult($("expected-result"), lines.join("\n"), r.announced || r.arrived ? "ok" : "bad");
});

$("logout-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();  // a plain form cannot carry the CSRF header
  await fetch("/logout", { method: "POST", headers: { "X-CSRF-Token": csrf }, credentials: "same-origin" });
  location.href = "/login";
});

if (loginRequired) $("requested-by-label").style.display = "none";
else $("logout-form").style.display = "none";
connect();
loadProfiles();
