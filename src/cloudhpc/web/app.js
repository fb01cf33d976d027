// The cloudhpc dashboard: plain ES modules and SVG, no external resources (works offline).
const $ = (sel) => document.querySelector(sel);
const COLORS = ["#175cd3", "#7a5af8", "#c11574", "#0e9384", "#b54708", "#12805c"];
let token = sessionStorage.getItem("cloudhpc-token") || "";
let timer = null;

async function api(path, options = {}) {
  const res = await fetch(path, { ...options, headers: { ...(options.headers || {}), Authorization: `Bearer ${token}`, "Content-Type": "application/json" } });
  if (res.status === 401) { logout("the token was refused"); throw new Error("unauthorized"); }
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(body.detail ? (typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail)) : res.statusText);
  return body;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  for (const c of children) node.append(c);
  return node;
}

function renderNodes(nodes) {
  const box = $("#nodesets");
  box.replaceChildren();
  const sets = {};
  for (const n of nodes) if (n.role === "compute") (sets[n.nodeset] ||= []).push(n);
  for (const [name, list] of Object.entries(sets)) {
    const chips = el("div", { class: "chips" });
    for (const n of list) {
      const state = n.state.split("+")[0];
      chips.append(el("span", { class: `chip ${state}`, title: n.reason || n.state, "data-node": n.name }, `${n.name} ${n.state}`));
    }
    const up = list.filter((n) => ["idle", "mixed", "allocated", "completing"].includes(n.state.split("+")[0])).length;
    box.append(el("div", { class: "nodeset", "data-nodeset": name }, el("strong", {}, `${name}: ${up} up of ${list.length}`), chips));
  }
}

function renderJobs(list) {
  const body = $("#jobs tbody");
  body.replaceChildren();
  for (const j of list.jobs) {
    body.append(el("tr", { "data-job": String(j.job_id) },
      el("td", {}, String(j.job_id)), el("td", {}, j.name), el("td", {}, j.user),
      el("td", { class: `state-${j.state}` }, j.state), el("td", {}, j.reason || ""),
      el("td", {}, j.nodes || ""), el("td", {}, j.end_time ? String(j.exit_code) : "")));
  }
}

function renderEvents(events) {
  const box = $("#events");
  box.replaceChildren();
  for (const e of events.slice(-60).reverse()) {
    const t = new Date(e.time * 1000).toLocaleTimeString();
    const detail = Object.entries(e).filter(([k]) => k !== "time" && k !== "kind").map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`).join(" ");
    box.append(el("li", {}, `${t} ${e.kind} ${detail}`));
  }
}

function polyline(svg, points, color, maxY, t0, t1, height) {
  if (points.length < 1) return;
  const w = 600, pad = 4;
  const xs = (t) => pad + ((t - t0) / Math.max(1, t1 - t0)) * (w - 2 * pad);
  const ys = (v) => height - pad - (v / Math.max(1, maxY)) * (height - 2 * pad);
  const d = points.map(([t, v]) => `${xs(t).toFixed(1)},${ys(v).toFixed(1)}`).join(" ");
  const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
  line.setAttribute("points", d); line.setAttribute("fill", "none");
  line.setAttribute("stroke", color); line.setAttribute("stroke-width", "2");
  svg.append(line);
}

function label(svg, text, y) {
  const t = document.createElementNS("http://www.w3.org/2000/svg", "text");
  t.setAttribute("x", "6"); t.setAttribute("y", String(y)); t.setAttribute("font-size", "11");
  t.setAttribute("fill", "#667085"); t.textContent = text;
  svg.append(t);
}

function renderPlots(samples) {
  const nodesSvg = $("#plot-nodes"), queueSvg = $("#plot-queue");
  nodesSvg.replaceChildren(); queueSvg.replaceChildren();
  const legend = $("#legend"); legend.replaceChildren();
  if (!samples.length) return;
  const t0 = samples[0].time, t1 = samples[samples.length - 1].time;
  const sets = [...new Set(samples.flatMap((s) => Object.keys(s.nodes_up)))];
  const maxNodes = Math.max(1, ...samples.flatMap((s) => Object.values(s.nodes_up)));
  const last = samples[samples.length - 1];
  sets.forEach((name, i) => {
    polyline(nodesSvg, samples.map((s) => [s.time, s.nodes_up[name] || 0]), COLORS[i % COLORS.length], maxNodes, t0, t1, 160);
    legend.append(el("span", { style: `color:${COLORS[i % COLORS.length]}`, "data-nodes-up": name }, `■ ${name}: ${last.nodes_up[name] || 0} nodes up`));
  });
  label(nodesSvg, `nodes up (0-${maxNodes}), last ${Math.round((t1 - t0) / 60)} min`, 14);
  const maxQ = Math.max(1, ...samples.map((s) => s.pending + s.running));
  label(queueSvg, `jobs pending / running (0-${maxQ})`, 14);
  polyline(queueSvg, samples.map((s) => [s.time, s.pending]), "#b54708", maxQ, t0, t1, 120);
  polyline(queueSvg, samples.map((s) => [s.time, s.running]), "#12805c", maxQ, t0, t1, 120);
  legend.append(el("span", { style: "color:#b54708" }, `■ pending ${last.pending}`), el("span", { style: "color:#12805c" }, `■ running ${last.running}`));
  nodesSvg.dataset.samples = String(samples.length);
}

function renderUsage(report) {
  const svg = $("#plot-usage"); svg.replaceChildren();
  const days = report.days || [];
  const hours = days.map((d) => d.node_seconds / 3600);
  const maxH = Math.max(0.01, ...hours);
  const w = 600, h = 140, pad = 4, top = 20;
  const bw = days.length ? Math.min(40, (w - 2 * pad) / days.length - 2) : 0;
  days.forEach((d, i) => {
    const bh = (hours[i] / maxH) * (h - top - pad);
    const bar = document.createElementNS("http://www.w3.org/2000/svg", "rect");
    bar.setAttribute("x", String(pad + i * (bw + 2))); bar.setAttribute("y", String(h - pad - bh));
    bar.setAttribute("width", String(bw)); bar.setAttribute("height", String(Math.max(1, bh)));
    bar.setAttribute("fill", "#1570ef"); bar.dataset.day = d.day;
    const tip = document.createElementNS("http://www.w3.org/2000/svg", "title");
    tip.textContent = `${d.day}: ${hours[i].toFixed(2)} node-hours, ${d.jobs} jobs, ${d.cost.toFixed(4)} ${report.currency}`;
    bar.append(tip); svg.append(bar);
  });
  label(svg, `node-hours per day (max ${maxH.toFixed(2)})`, 14);
  const total = days.reduce((a, d) => a + d.node_seconds, 0);
  svg.dataset.days = String(days.length); svg.dataset.nodeSeconds = String(total);
  const body = $("#usage tbody"); body.replaceChildren();
  for (const r of report.rows || []) {
    body.append(el("tr", {}, el("td", {}, r.user), el("td", {}, String(r.jobs)),
      el("td", {}, (r.node_seconds / 3600).toFixed(3)), el("td", {}, (r.cpu_seconds / 3600).toFixed(3)),
      el("td", {}, `${r.cost.toFixed(4)} ${report.currency}`)));
  }
}

let usageAt = 0;
async function refreshUsage() {
  if (Date.now() - usageAt < 15000) return;  // sacct is asked at most every 15 s
  usageAt = Date.now();
  try { renderUsage(await api("/api/report?since=30d&by=user")); $("#usage-error").textContent = ""; }
  catch (err) { $("#usage-error").textContent = `usage: ${err.message}`; }
}

async function refresh() {
  try {
    const [nodes, jobs, events, samples] = await Promise.all([
      api("/api/nodes"), api("/api/jobs?limit=50"), api("/api/events?limit=200"), api("/api/metrics")]);
    renderNodes(nodes); renderJobs(jobs); renderEvents(events); renderPlots(samples);
    refreshUsage();
  } catch (err) { console.warn(err); }
}

async function login(candidate) {
  token = candidate;
  try {
    const info = await api("/api/cluster");
    sessionStorage.setItem("cloudhpc-token", token);
    $("#cluster-name").textContent = info.name;
    $("#whoami").textContent = `${info.user}${info.admin ? " (admin)" : ""}`;
    $("#login").hidden = true; $("#dashboard").hidden = false; $("#logout").hidden = false;
    $("#login-error").textContent = "";
    await refresh();
    timer = setInterval(refresh, 2000);
  } catch (err) {
    $("#login-error").textContent = `log in failed: ${err.message}`;
  }
}

function logout(why = "") {
  sessionStorage.removeItem("cloudhpc-token"); token = "";
  if (timer) clearInterval(timer);
  $("#login").hidden = false; $("#dashboard").hidden = true; $("#logout").hidden = true;
  $("#login-error").textContent = why;
}

$("#login-form").addEventListener("submit", (ev) => { ev.preventDefault(); login($("#token").value.trim()); });
$("#logout").addEventListener("click", () => logout());
$("#submit-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const body = { script: $("#script").value, name: "web" };
  const nodes = parseInt($("#nodes").value, 10); if (nodes) body.nodes = nodes;
  const partition = $("#partition").value.trim(); if (partition) body.partition = partition;
  try {
    const job = await api("/api/jobs", { method: "POST", body: JSON.stringify(body) });
    $("#submit-result").textContent = `submitted job ${job.job_id}`;
    $("#submit-result").dataset.job = String(job.job_id);
    await refresh();
  } catch (err) { $("#submit-result").textContent = `refused: ${err.message}`; }
});
if (token) login(token);
