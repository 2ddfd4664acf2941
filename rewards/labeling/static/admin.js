// textenv labeling: the admin dashboard. Charts are SVG drawn here from /api/admin/dashboard (no library);
// text from the store (names, tasks, questions) is only ever inserted with textContent.
"use strict";
const NS = "http://www.w3.org/2000/svg";
const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"];
let csrf = null;
let loggedIn = false;

const $ = (id) => document.getElementById(id);
function el(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = String(text);
  return node;
}
function sv(tag, attrs = {}, text) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = String(text);
  return node;
}
const pct = (x) => (x === null || x === undefined ? "n/a" : `${(100 * x).toFixed(1)}%`);

async function api(method, path, body) {
  const headers = { "Content-Type": "application/json" };
  if (csrf && method !== "GET") headers["X-CSRF-Token"] = csrf;
  const res = await fetch(path, { method, headers, credentials: "same-origin",
                                  body: body === undefined ? undefined : JSON.stringify(body) });
  const data = await res.json().catch(() => ({}));
  if (!res.ok) { const err = new Error(data.detail || res.statusText); err.status = res.status; throw err; }
  return data;
}

// ------------------------------------------------------------------------------------------ charts
function chartSvg(width, height, label) {
  const svg = sv("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label,
                          preserveAspectRatio: "xMinYMin meet", class: "svg" });
  svg.appendChild(sv("title", {}, label));
  return svg;
}

// A table of the numbers behind a chart, folded (readable by screen readers and keyboard alike).
function dataTable(headers, rows) {
  const details = el("details");
  details.appendChild(el("summary", {}, "the numbers"));
  const wrap = el("div", { class: "table-wrap" });
  const table = el("table");
  const tr = el("tr");
  for (const h of headers) tr.appendChild(el("th", { scope: "col" }, h));
  table.appendChild(el("thead")).appendChild(tr);
  const body = table.appendChild(el("tbody"));
  for (const row of rows) {
    const r = el("tr");
    for (const v of row) r.appendChild(el("td", {}, v));
    body.appendChild(r);
  }
  wrap.appendChild(table);
  details.appendChild(wrap);
  return details;
}

function legend(items) {
  const ul = el("ul", { class: "legend" });
  items.forEach(([name, color]) => {
    const li = el("li");
    const swatch = el("span", { class: "swatch", "aria-hidden": "true" });
    swatch.dataset.color = color;
    li.appendChild(swatch);
    li.appendChild(document.createTextNode(name));
    ul.appendChild(li);
  });
  return ul;
}

// Horizontal bars: rows of {label, parts: [[value, color, name]], tick?: value}; max is the axis end.
function hbars(title, rows, max, format) {
  const rowH = 26, left = 150, width = 640, right = 170;
  const height = rows.length * rowH + 30;
  const svg = chartSvg(width, height, title);
  const scale = (v) => (max > 0 ? ((width - left - right) * v) / max : 0);
  rows.forEach((row, i) => {
    const y = 10 + i * rowH;
    svg.appendChild(sv("text", { x: left - 6, y: y + 15, "text-anchor": "end", class: "label" }, row.label));
    let x = left;
    for (const [value, color, name] of row.parts) {
      const w = scale(value);
      const rect = sv("rect", { x, y, width: Math.max(w, 0), height: rowH - 8, fill: color });
      rect.appendChild(sv("title", {}, `${row.label}: ${name} ${format(value)}`));
      svg.appendChild(rect);
      x += w;
    }
    if (row.tick !== undefined && row.tick !== null) {
      const tx = left + scale(row.tick);
      svg.appendChild(sv("line", { x1: tx, x2: tx, y1: y - 3, y2: y + rowH - 5, class: "tick" }));
    }
    svg.appendChild(sv("text", { x: x + 6, y: y + 15, class: "value" }, row.text ?? format(row.parts.reduce((s, p) => s + p[0], 0))));
  });
  svg.appendChild(sv("line", { x1: left, x2: left, y1: 5, y2: height - 20, class: "axis" }));
  return svg;
}

// Lines: series of {name, color, points: [[x, y]], dots?, dashed?}; optional horizontal reference line.
function lines(title, series, opts) {
  const width = 640, height = 260, left = 56, right = 16, top = 12, bottom = 40;
  const svg = chartSvg(width, height, title);
  const xs = series.flatMap((s) => s.points.map((p) => p[0]));
  const ys = series.flatMap((s) => s.points.map((p) => p[1]));
  const x0 = opts.xmin ?? Math.min(...xs), x1 = opts.xmax ?? Math.max(...xs);
  const y0 = opts.ymin ?? 0, y1 = opts.ymax ?? Math.max(1, ...ys);
  const X = (x) => left + (x1 > x0 ? ((width - left - right) * (x - x0)) / (x1 - x0) : 0);
  const Y = (y) => height - bottom - (y1 > y0 ? ((height - top - bottom) * (y - y0)) / (y1 - y0) : 0);
  svg.appendChild(sv("line", { x1: left, x2: width - right, y1: Y(y0), y2: Y(y0), class: "axis" }));
  svg.appendChild(sv("line", { x1: left, x2: left, y1: top, y2: Y(y0), class: "axis" }));
  for (const t of [y0, (y0 + y1) / 2, y1]) {
    svg.appendChild(sv("text", { x: left - 6, y: Y(t) + 4, "text-anchor": "end", class: "value" }, opts.yfmt(t)));
  }
  for (const [t, anchor] of [[x0, "start"], [x1, "end"]]) {
    svg.appendChild(sv("text", { x: X(t), y: height - bottom + 16, "text-anchor": anchor, class: "value" }, opts.xfmt(t)));
  }
  svg.appendChild(sv("text", { x: (left + width) / 2, y: height - 6, "text-anchor": "middle", class: "label" }, opts.xlabel));
  if (opts.reference !== undefined && opts.reference !== null) {
    svg.appendChild(sv("line", { x1: left, x2: width - right, y1: Y(opts.reference), y2: Y(opts.reference), class: "tick" }));
  }
  for (const s of series) {
    if (s.points.length > 1) {
      const d = s.points.map((p, i) => `${i ? "L" : "M"}${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`).join(" ");
      svg.appendChild(sv("path", { d, fill: "none", stroke: s.color, "stroke-width": 2,
                                   "stroke-dasharray": s.dashed ? "6 4" : "none" }));
    }
    if (s.dots !== false) {
      for (const [x, y] of s.points) {
        const c = sv("circle", { cx: X(x), cy: Y(y), r: 3.5, fill: s.color });
        c.appendChild(sv("title", {}, `${s.name}: ${opts.xfmt(x)}, ${opts.yfmt(y)}`));
        svg.appendChild(c);
      }
    }
  }
  return svg;
}

function colorLegends(root) {  // swatch colours set from data attributes (no inline style: CSP)
  for (const s of root.querySelectorAll(".swatch")) {
    const svg = sv("svg", { width: 12, height: 12, "aria-hidden": "true" });
    svg.appendChild(sv("rect", { width: 12, height: 12, fill: s.dataset.color }));
    s.replaceChildren(svg);
  }
}

function empty(box, text) { box.replaceChildren(el("p", { class: "note" }, text)); }

// ------------------------------------------------------------------------------------------ sections
function drawHourly(data) {
  const box = $("hourly");
  if (!data.hourly.length) return empty(box, "No answers yet.");
  const names = [...new Set(data.hourly.map((h) => h.labeler))].sort();
  const color = Object.fromEntries(names.map((n, i) => [n, COLORS[i % COLORS.length]]));
  const hours = data.hourly.map((h) => h.hour);
  const first = Math.min(...hours), last = Math.max(...hours);
  const series = names.map((name) => {
    const by = Object.fromEntries(data.hourly.filter((h) => h.labeler === name).map((h) => [h.hour, h.answers]));
    const points = [];
    for (let h = first; h <= last; h++) points.push([h, by[h] || 0]);
    return { name, color: color[name], points };
  });
  const fmt = (h) => new Date(h * 3600 * 1000).toISOString().slice(5, 13).replace("T", " ") + "h";
  box.replaceChildren(
    lines("Answers per hour per labeler", series, { xlabel: "hour (UTC)", xfmt: fmt, yfmt: (y) => y.toFixed(0) }),
    legend(names.map((n) => [n, color[n]])),
    dataTable(["hour (UTC)", "labeler", "answers", "skips", "flags"],
              data.hourly.map((h) => [fmt(h.hour), h.labeler, h.answers, h.skips, h.flags])));
}

function drawAgreement(data) {
  const box = $("agreement");
  const a = data.agreement, e = data.evaluation_agreement;
  const summary = el("p", {},
    `Training questions: ${pct(a.agreement)} over ${a.agreement_pairs} pairs on ${a.questions_with_duplicates} ` +
    `duplicated questions` + (e.evaluation_agreement_pairs ? `; evaluation pairs: ${pct(e.evaluation_agreement)} ` +
    `over ${e.evaluation_agreement_pairs} pairs.` : "."));
  if (!data.pairs.length) return box.replaceChildren(summary, el("p", { class: "note" }, "No question answered by two labelers yet."));
  const rows = data.pairs.map((p) => ({
    label: `${p.a} · ${p.b}${p.kind === "eval" ? " (eval)" : ""}`,
    parts: [[p.agreement, p.agreement >= p.chance ? "#2ca02c" : "#d62728", "agreement"]],
    tick: p.chance,
    text: `${pct(p.agreement)} of ${p.pairs} (chance ${pct(p.chance)})`,
  }));
  box.replaceChildren(summary, hbars("Agreement per labeler pair, with chance level", rows, 1, pct),
    dataTable(["pair", "kind", "shared questions", "agree", "agreement", "chance"],
              data.pairs.map((p) => [`${p.a} · ${p.b}`, p.kind, p.pairs, p.agree, pct(p.agreement), pct(p.chance)])));
}

function drawSkips(data) {
  const box = $("skips");
  const entries = Object.entries(data.labelers);
  if (!entries.length) return empty(box, "No labeler has answered yet.");
  const max = Math.max(...entries.map(([, s]) => s.answers + s.skips + s.flags));
  const rows = entries.map(([name, s]) => ({
    label: name,
    parts: [[s.answers, "#1f77b4", "answers"], [s.skips, "#ff7f0e", "skips"], [s.flags, "#d62728", "flags"]],
    text: `${s.answers} / ${s.skips} / ${s.flags}`,
  }));
  box.replaceChildren(hbars("Answers, skips and flags per labeler", rows, max, (v) => v.toFixed(0)),
    legend([["answers", "#1f77b4"], ["skips", "#ff7f0e"], ["flags", "#d62728"]]),
    dataTable(["labeler", "answers", "per hour", "skips", "flags"],
              entries.map(([n, s]) => [n, s.answers, s.answers_per_hour === null ? "" : s.answers_per_hour.toFixed(0), s.skips, s.flags])));
}

function drawFlags(data) {
  const box = $("flags");
  const latest = data.flags.latest;
  if (!latest.length) return empty(box, "No flagged questions.");
  const list = el("ol", { class: "flags" });
  for (const f of latest) {
    const li = el("li");
    const details = el("details");
    const when = new Date(f.created * 1000).toISOString().slice(0, 16).replace("T", " ");
    details.appendChild(el("summary", {}, `${f.question_id} (${f.task}), flagged by ${f.labeler} at ${when} UTC`));
    details.appendChild(el("pre", { class: "text" }, f.query ?? ""));
    const samples = el("ol", { class: "flag-samples" });
    for (const s of f.samples) samples.appendChild(el("li", { class: "text" }, s));
    details.appendChild(samples);
    li.appendChild(details);
    list.appendChild(li);
  }
  box.replaceChildren(el("p", {}, `${data.flags.total} flags in all; the latest ${latest.length} (open one to read it):`), list);
}

function drawTasks(data) {
  const box = $("tasks");
  if (!data.tasks.length) return empty(box, "No questions in the store.");
  const rows = data.tasks.map((t) => ({
    label: t.task,
    parts: [[(t.questions - t.pending) / t.questions, "#2ca02c", "answered"], [t.pending / t.questions, "#cccccc", "pending"]],
    text: `${t.questions - t.pending} of ${t.questions} answered`,
  }));
  box.replaceChildren(hbars("Questions answered per task", rows, 1, pct),
    legend([["answered", "#2ca02c"], ["pending", "#cccccc"]]),
    dataTable(["task", "questions", "answered", "pending", "judgements"],
              data.tasks.map((t) => [t.task, t.questions, t.questions - t.pending, t.pending, t.judgements])));
}

function labelsNeeded(n, run) {  // l(n) of PAPER.md §1.7, as agents/online.py
  const f = Math.min(Math.max(n / run.total_episodes, 0), 1);
  return run.initial_labels + (run.final_labels - run.initial_labels) * (1 - (1 - f) ** 2);
}

function drawOnline(data) {
  const box = $("online");
  if (!data.online.length) return empty(box, "No online run has written to this store.");
  const run = data.online[0];
  const head = el("p", {}, `Run ${run.run_id} (${run.mode}, ${run.task}): ${run.initial_labels} → ${run.final_labels} labels ` +
    `over ${run.total_episodes} episodes, ${run.retrain_log.length} of ${run.retrains} retrains done.`);
  const curve = [];
  for (let i = 0; i <= 50; i++) { const n = (run.total_episodes * i) / 50; curve.push([n, labelsNeeded(n, run)]); }
  const got = run.progress.map((p) => [p.episodes, p.labels]);
  const schedule = lines("Labels collected against the l(n) schedule", [
    { name: "l(n)", color: "#7f7f7f", points: curve, dots: false, dashed: true },
    { name: "labels in", color: "#1f77b4", points: got },
  ], { xlabel: "PPO episodes", xmin: 0, xmax: run.total_episodes, xfmt: (x) => x.toFixed(0), yfmt: (y) => y.toFixed(0) });
  const parts = [head, el("h3", {}, "Labels against l(n)"), schedule,
    legend([["l(n), labels needed", "#7f7f7f"], ["labels in", "#1f77b4"]]),
    dataTable(["iteration", "episodes", "l(n)", "labels in", "pending"],
              run.progress.map((p) => [p.iteration, p.episodes, p.labels_needed, p.labels, p.pending]))];
  const scored = run.retrain_log.filter((r) => r.heldout_accuracy !== null);
  parts.push(el("h3", {}, "Reward model: held-out accuracy at each retrain"));
  parts.push(el("p", { class: "note" }, "Each retrain's model scored on the labels that arrived after it (it never trained on them); dashed: chance (1 in 4)."));
  if (scored.length) {
    parts.push(lines("Held-out accuracy of the reward model per retrain",
      [{ name: "held-out accuracy", color: "#9467bd", points: scored.map((r) => [r.labels, r.heldout_accuracy]) }],
      { xlabel: "labels trained on", ymin: 0, ymax: 1, reference: 0.25, xfmt: (x) => x.toFixed(0), yfmt: pct }));
  } else {
    parts.push(el("p", { class: "note" }, "No retrain has been scored yet (a model is scored at the next retrain)."));
  }
  parts.push(dataTable(["retrain", "iteration", "labels", "loss", "held-out accuracy", "held-out labels"],
    run.retrain_log.map((r) => [r.retrain, r.iteration, r.labels, r.loss === null ? "" : r.loss.toFixed(3),
                                pct(r.heldout_accuracy), r.heldout_labels ?? ""])));
  box.replaceChildren(...parts);
}

// ------------------------------------------------------------------------------------------ session
function showLogin(reason) {
  loggedIn = false;
  csrf = null;
  $("who").textContent = "Not logged in";
  $("main").hidden = true;
  $("logout").hidden = true;
  $("refresh").hidden = true;
  $("login").hidden = false;
  $("login-reason").textContent = reason;
  $("token").focus();
}

async function load() {
  let me;
  try { me = await api("GET", "/api/me"); } catch (err) {
    if (err.status === 401) {
      return showLogin(loggedIn
        ? `Your session ended (it expired, you logged out elsewhere or your token was revoked): log in again with an admin token. (${err.message})`
        : "You are not logged in: log in with an admin token.");
    }
    throw err;
  }
  csrf = me.csrf;
  $("who").textContent = `Logged in as ${me.labeler}${me.admin ? " (admin)" : ""}`;
  $("logout").hidden = false;
  if (!me.admin) {
    showLogin(`${me.labeler} is not an admin: log in with an admin token to see the dashboard.`);
    $("who").textContent = `Logged in as ${me.labeler} (not an admin)`;
    $("logout").hidden = false;
    return;
  }
  let data;
  try { data = await api("GET", "/api/admin/dashboard"); } catch (err) {
    if (err.status === 401 || err.status === 403) return showLogin(`Please log in again: ${err.message}`);
    throw err;
  }
  loggedIn = true;
  $("login").hidden = true;
  $("main").hidden = false;
  $("refresh").hidden = false;
  const names = Object.keys(data.labelers);
  const answers = Object.values(data.labelers).reduce((s, l) => s + l.answers, 0);
  $("summary").textContent = `${answers} answers by ${names.length} labelers; ${data.flags.total} flags; ` +
    `agreement ${pct(data.agreement.agreement)} over ${data.agreement.agreement_pairs} pairs.`;
  drawHourly(data); drawAgreement(data); drawSkips(data); drawFlags(data); drawTasks(data); drawOnline(data);
  colorLegends($("main"));
}

function report(err) { $("summary").textContent = `could not load the dashboard: ${err.message}`; }

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      await api("POST", "/api/login", { token: $("token").value });
      $("token").value = "";
      await load();
      if (loggedIn) $("main").focus();
    } catch (err) { $("login-reason").textContent = err.message; }
  });
  $("logout").addEventListener("click", async () => {
    try { await api("POST", "/api/logout"); } catch (err) { /* ended already */ }
    loggedIn = false;
    showLogin("Logged out.");
  });
  $("refresh").addEventListener("click", () => load().catch(report));
  document.addEventListener("keydown", (e) => {
    if (e.key === "r" && e.target.tagName !== "INPUT" && !$("main").hidden) load().catch(report);
  });
  load().catch(report);
});
