"""The worker's read-only page: one HTML document, inline CSS and script, no external assets.

The script polls ``/api/overview`` every few seconds and rebuilds the tables with DOM calls
(``textContent``, never ``innerHTML`` with data: alert labels come from upstream frames).
Element ids (``firing``, ``pending``, ``silences``, ``notifications``, ``channels``,
``stages``, ``ready``, ``updated``) are what the browser test asserts on.
"""

from __future__ import annotations

__all__ = ["HTML", "REFRESH_MS"]

REFRESH_MS = 5000
"""How often the page refreshes itself."""

HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>StreamWarden</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #1d2330; background: #f4f6f9; }
header { background: #1d2330; color: #fff; padding: 10px 20px; display: flex; gap: 20px;
         align-items: center; }
header h1 { font-size: 18px; margin: 0; }
#ready { padding: 2px 10px; border-radius: 10px; font-weight: 600; }
#ready.ok { background: #2e7d32; } #ready.bad { background: #c62828; }
#updated { margin-left: auto; opacity: .8; font-size: 12px; }
main { padding: 10px 20px; display: grid; grid-template-columns: 1fr 1fr; gap: 16px; }
section { background: #fff; border-radius: 6px; padding: 8px 14px 14px;
          box-shadow: 0 1px 2px rgba(0,0,0,.08); }
section.wide { grid-column: 1 / -1; }
h2 { font-size: 15px; margin: 6px 0 8px; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 3px 8px 3px 0; border-bottom: 1px solid #e6e9ef;
         vertical-align: top; font-size: 13px; }
th { color: #5b6475; font-weight: 600; }
.sev-critical { color: #c62828; font-weight: 600; } .sev-warning { color: #b26a00; }
.outcome-failed { color: #c62828; } .outcome-suppressed { color: #6a5acd; }
.empty { color: #8a92a3; font-style: italic; }
.group td { background: #f0f2f6; font-weight: 600; }
</style>
</head>
<body>
<header><h1>StreamWarden</h1><span id="ready">…</span><span id="notready"></span>
<span id="updated">loading…</span></header>
<main>
<section class="wide"><h2>Firing</h2><table id="firing"></table></section>
<section><h2>Pending</h2><table id="pending"></table></section>
<section><h2>Silences</h2><table id="silences"></table></section>
<section class="wide"><h2>Recent notifications</h2><table id="notifications"></table></section>
<section><h2>Channels</h2><table id="channels"></table></section>
<section><h2>Stages</h2><table id="stages"></table></section>
</main>
<script>
"use strict";
const REFRESH_MS = __REFRESH_MS__;
function age(ms, now) {
  let s = Math.max(0, Math.round((now - ms) / 1000));
  if (s < 120) return s + "s";
  let m = Math.round(s / 60); if (m < 120) return m + "m";
  let h = Math.round(m / 60); if (h < 48) return h + "h";
  return Math.round(h / 24) + "d";
}
function fmt(v) { return typeof v === "number" ? String(Math.round(v * 1000) / 1000) : String(v); }
function cell(row, text, cls) {
  const td = document.createElement("td"); td.textContent = text;
  if (cls) td.className = cls; row.appendChild(td); return td;
}
function fill(id, headers, rows, emptyText) {
  const table = document.getElementById(id);
  table.replaceChildren();
  const head = document.createElement("tr");
  for (const h of headers) { const th = document.createElement("th"); th.textContent = h;
    head.appendChild(th); }
  table.appendChild(head);
  if (rows.length === 0) {
    const tr = document.createElement("tr"); const td = cell(tr, emptyText, "empty");
    td.colSpan = headers.length; table.appendChild(tr); return;
  }
  for (const r of rows) table.appendChild(r);
}
function row(values, classes, rowClass) {
  const tr = document.createElement("tr");
  values.forEach((v, i) => cell(tr, v, classes ? classes[i] : ""));
  if (rowClass) tr.className = rowClass;
  tr.dataset.kind = "data";
  return tr;
}
function render(o) {
  const now = o.now_ms;
  const ready = document.getElementById("ready");
  ready.textContent = o.ready ? "ready" : "not ready";
  ready.className = o.ready ? "ok" : "bad";
  document.getElementById("notready").textContent =
    o.ready ? "" : Object.keys(o.checks).filter(k => !o.checks[k].ok).join(", ");
  document.getElementById("updated").textContent = "updated " + new Date(now).toLocaleTimeString();
  const firing = o.alerts.filter(a => a.state === "firing");
  const groups = {};
  for (const a of firing) (groups[a.rule + "\\u0000" + a.severity] ||= []).push(a);
  const rows = [];
  for (const key of Object.keys(groups).sort()) {
    const list = groups[key];
    const g = row([list[0].rule + " (" + list.length + ")", list[0].severity, "", "", ""],
                  ["", "sev-" + list[0].severity], "group");
    g.dataset.kind = "group"; rows.push(g);
    for (const a of list) rows.push(row([a.entity, a.severity, age(a.since_ms, now), fmt(a.value),
      a.annotations.summary || a.metric], ["", "sev-" + a.severity]));
  }
  fill("firing", ["alert", "severity", "age", "value", "summary"], rows, "nothing is firing");
  fill("pending", ["rule", "entity", "for", "value"], o.alerts.filter(a => a.state === "pending")
    .map(a => row([a.rule, a.entity, age(a.since_ms, now), fmt(a.value)])), "nothing pending");
  fill("silences", ["id", "matchers", "state", "ends"], o.silences.map(s => row([s.id,
    (s.matchers || []).join(", "), s.state || "",
    s.ends_at_ms ? new Date(s.ends_at_ms).toLocaleString() : ""])), "no silences");
  fill("notifications", ["time", "channel", "outcome", "kind", "rule", "entity", "reason"],
    o.notifications.slice().reverse().map(n => row([new Date(n.at_ms).toLocaleTimeString(),
      n.channel, n.outcome, n.kind, n.rule, n.entity, n.reason],
      ["", "", "outcome-" + n.outcome])), "no notifications yet");
  const ch = o.status.channels;
  fill("channels", ["channel", "sent", "failed", "retried", "silenced", "suppressed"],
    Object.keys(ch).map(name => row([name, ch[name].sent || 0, ch[name].failed || 0,
      ch[name].retried || 0, ch[name].silenced || 0, ch[name].suppressed || 0].map(String),
      ["", "", (ch[name].failed ? "outcome-failed" : "")])), "no channels");
  fill("stages", ["stage", "group", "lag", "partitions"], o.status.stages.map(s => row([s.stage,
    s.group, String(s.lag), String(s.partitions.length)])), "lag not read yet");
}
async function tick() {
  try {
    const response = await fetch("api/overview", {cache: "no-store"});
    render(await response.json());
  } catch (e) {
    document.getElementById("updated").textContent = "update failed: " + e;
  }
}
tick();
setInterval(tick, REFRESH_MS);
</script>
</body>
</html>
""".replace("__REFRESH_MS__", str(REFRESH_MS))
