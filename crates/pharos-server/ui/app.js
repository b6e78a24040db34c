// The pharos dashboard: pages drawn from the REST API with the operator's token.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const main = $("#main");
let timers = [];
let charts = [];
// Bumped at every navigation: work started for an earlier page stops touching this one.
let nav = 0;
class Stale extends Error {}
function still(my) { if (my !== nav) { throw new Stale(); } }

function token() { return sessionStorage.getItem("pharos-token"); }

class AuthError extends Error {}

async function api(path, opts = {}) {
  const headers = Object.assign({ Authorization: `Bearer ${token()}` }, opts.headers || {});
  const r = await fetch(path, Object.assign({}, opts, { headers }));
  if (r.status === 401) { throw new AuthError("the token was refused"); }
  const text = await r.text();
  let body;
  try { body = text ? JSON.parse(text) : null; } catch { body = text; }
  if (!r.ok) { throw new Error((body && body.error) || text || r.statusText); }
  return body;
}

function esc(s) {
  return String(s ?? "").replace(/[&<>"']/g, c => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}
function fmt(x, d = 2) { return x == null || Number.isNaN(x) ? "-" : Number(x).toFixed(d); }
function time(ms) { return ms ? new Date(ms).toISOString().replace("T", " ").slice(0, 19) : "-"; }

// A repeated refresh of the current page; a refused token logs out.
function every(ms, f) {
  const my = nav;
  timers.push(setInterval(() => {
    if (my !== nav) { return; }
    f().catch(e => { if (e instanceof AuthError) { logout(e.message); } });
  }, ms));
}
function reset() {
  timers.forEach(clearInterval); timers = [];
  charts.forEach(c => c.destroy()); charts = [];
  delete document.body.dataset.ready;
}
function ready(page) { document.body.dataset.ready = page; }

// A line chart: xs in ms, series [{label, values, color}]. The container says how many
// points it holds (data-points), which tests read.
function chart(el, title, xs, series, opts = {}) {
  const box = document.createElement("div");
  box.className = "chart";
  box.innerHTML = `<h3>${esc(title)}</h3>`;
  el.appendChild(box);
  const plot = document.createElement("div");
  plot.dataset.points = String(xs.length);
  plot.dataset.chart = opts.id || title;
  box.appendChild(plot);
  const colors = ["#1a5fd0", "#18794e", "#c02020", "#9a6700", "#7b3fe4", "#0a8f9f", "#555"];
  const u = new uPlot({
    width: opts.width || 460, height: opts.height || 200,
    scales: { x: { time: opts.time !== false } },
    bands: opts.bands,
    axes: [opts.xvalues ? { values: opts.xvalues, space: 30, size: 90, rotate: -40 } : {}, { label: opts.ylabel || "" }],
    series: [{}].concat(series.map((s, i) => ({
      label: s.label, stroke: s.color || colors[i % colors.length], width: 1.5,
      dash: s.dash, spanGaps: true,
    }))),
  }, [opts.time === false ? xs : xs.map(t => t / 1000)].concat(series.map(s => s.values)), plot);
  charts.push(u);
  return u;
}

// ----- pages ------------------------------------------------------------------------

async function cluster() {
  main.innerHTML = `<h1>Cluster</h1><table class="kv" id="now"></table><div class="charts" id="charts"></div>`;
  const my = nav;
  const [h, svcs, jobs] = await Promise.all([api("/v1/history"), api("/v1/services"), api("/v1/models")]);
  still(my);
  const last = h.cluster[h.cluster.length - 1];
  const running = jobs.models.filter(j => ["PENDING", "DOWNLOADING", "PROCESSING", "STORING"].includes(j.state));
  const replicas = svcs.services.reduce((n, s) => n + s.ready_replicas + s.starting_replicas, 0);
  $("#now").innerHTML = last ? `
    <tr><td>capacity</td><td>${fmt(last.capacity_cpus, 1)} vCPUs</td></tr>
    <tr><td>inference replicas</td><td>${fmt(last.inference_cpus, 1)} vCPUs (${replicas} replicas of your ${svcs.services.length} services)</td></tr>
    <tr><td>training learners</td><td>${fmt(last.training_cpus, 1)} vCPUs (${running.length} of your jobs running)</td></tr>
    <tr><td>free</td><td>${fmt(last.capacity_cpus - last.inference_cpus - last.training_cpus, 1)} vCPUs</td></tr>`
    : `<tr><td class="muted">no sample yet (one every ${h.interval_s} s)</td></tr>`;
  const xs = h.cluster.map(p => p.t_ms);
  chart($("#charts"), "vCPUs held", xs, [
    { label: "inference", values: h.cluster.map(p => p.inference_cpus) },
    { label: "training", values: h.cluster.map(p => p.training_cpus) },
    { label: "free", values: h.cluster.map(p => p.capacity_cpus - p.inference_cpus - p.training_cpus) },
    { label: "capacity", values: h.cluster.map(p => p.capacity_cpus), dash: [4, 4] },
  ], { id: "cluster", width: 760, height: 260, ylabel: "vCPUs" });
  ready("cluster");
}

async function services() {
  main.innerHTML = `<h1>Inference services</h1><table id="services"><thead><tr>
    <th>service</th><th>state</th><th class="num">ready</th><th class="num">starting</th><th class="num">target</th>
    <th class="num">arrivals</th><th class="num">dropped</th><th class="num">in flight</th><th>SLO</th><th>router</th></tr></thead><tbody></tbody></table>`;
  const my = nav;
  const v = await api("/v1/services");
  still(my);
  $("#services tbody").innerHTML = v.services.map(s => `<tr data-name="${esc(s.name)}">
    <td><a href="#/services/${encodeURIComponent(s.name)}">${esc(s.name)}</a></td>
    <td class="state" title="${esc(conditionText(s.conditions))}">${esc(stateWord(s.conditions))}</td>
    <td class="num">${s.ready_replicas}</td><td class="num">${s.starting_replicas}</td><td class="num">${s.target_replicas}</td>
    <td class="num">${s.counters.arrivals}</td><td class="num">${s.counters.dropped}</td><td class="num">${s.in_flight}</td>
    <td>p${s.spec.slo.percentile} &le; ${fmt(s.spec.slo.latency_s * 1000, 0)} ms</td><td>${esc(s.url)}</td></tr>`).join("")
    || `<tr><td colspan="10" class="muted">no services</td></tr>`;
  ready("services");
}

// A service's (or graph's) state in one word: its first condition that holds other
// than Ready, else why it is or is not ready (as `pharos get services` says it).
function stateWord(cs) {
  cs = cs || [];
  const other = cs.find(c => c.type !== "Ready" && c.status === "True");
  if (other) { return other.type; }
  const r = cs.find(c => c.type === "Ready");
  return r ? (r.reason === "TargetReady" || r.reason === "AllFunctionsReady" ? "Ready" : r.reason) : "-";
}
function conditionText(cs) {
  return (cs || []).map(c => `${c.type} ${c.status}: ${c.reason}: ${c.message}`).join("\n");
}
function conditionRows(cs) {
  return (cs || []).map(c => `<tr data-condition="${esc(c.type)}"><td>${esc(c.type)}</td><td>${esc(c.status)}</td>
    <td>${esc(c.reason)}</td><td>${esc(c.message)}</td></tr>`).join("");
}

async function graphs() {
  main.innerHTML = `<h1>Function graphs</h1><div id="graphs"></div>`;
  const my = nav;
  const v = await api("/v1/graphs");
  still(my);
  const ms = x => x == null ? "-" : fmt(x * 1000, 0);
  $("#graphs").innerHTML = v.graphs.map(g => {
    const c = g.counters, a = g.autoscaler || {};
    return `<section class="graph" data-name="${esc(g.name)}"><h2>${esc(g.name)} <span class="state">${esc(stateWord(g.conditions))}</span></h2>
      <table class="conditions"><tbody>${conditionRows(g.conditions)}</tbody></table>
      <p>${esc(g.url)} (entry ${esc(g.entry)}): ${c.arrivals} requests, ${c.completions} completed,
      ${c.failed} failed (${c.dropped} dropped, ${c.timeouts} timed out, ${c.errors} errors);
      response mean ${ms(c.response_s.mean_s)} ms, p99 ${ms(c.response_s.p99_s)} ms.
      Autoscaler ${esc(a.policy)}: ${a.calls ?? 0} decisions.</p>
      <table><thead><tr><th>function</th><th class="num">ready</th><th class="num">target</th>
      <th class="num">vCPUs each</th><th class="num">arrivals</th><th class="num">completed</th>
      <th class="num">drops</th><th class="num">timeouts</th><th class="num">failed</th>
      <th class="num">mean ms</th><th class="num">p99 ms</th></tr></thead><tbody>
      ${g.functions.map(f => `<tr data-function="${esc(f.name)}">
        <td><a href="#/services/${encodeURIComponent(f.service)}">${esc(f.name)}</a></td>
        <td class="num">${f.ready_replicas ?? "-"}</td><td class="num">${f.target_replicas ?? "-"}</td>
        <td class="num">${fmt(f.resources_per_replica.cpus, 2)}</td>
        <td class="num">${f.counters.arrivals}</td><td class="num">${f.counters.completions}</td>
        <td class="num">${f.counters.drops}</td><td class="num">${f.counters.timeouts}</td>
        <td class="num">${f.counters.failed}</td><td class="num">${ms(f.counters.response_s.mean_s)}</td>
        <td class="num">${ms(f.counters.response_s.p99_s)}</td></tr>`).join("")}
      </tbody></table></section>`;
  }).join("") || `<p class="muted">no graphs</p>`;
  ready("graphs");
}

async function service(name) {
  main.innerHTML = `<h1>Service ${esc(name)}</h1><table class="kv" id="now"></table>
    <div class="charts" id="charts"></div><h2>The autoscaler's decisions for this service</h2>
    <p class="muted" id="policy"></p><table id="decisions"><thead><tr><th>time</th><th>policy time s</th>
    <th class="num">target</th><th class="num">ready</th><th class="num">starting</th><th class="num">queued</th>
    <th class="num">in flight</th><th class="num">last minute's arrivals</th><th class="num">free vCPUs</th><th>accept rate</th><th>policy's reasons</th></tr></thead><tbody></tbody></table>
    <h2>Events</h2><table id="events"><tbody></tbody></table>`;
  $("#now").insertAdjacentHTML("afterend", `<h2>Conditions</h2><table id="conditions"><thead><tr><th>condition</th>
    <th>status</th><th>reason</th><th>message</th></tr></thead><tbody></tbody></table>`);
  const my = nav;
  const enc = encodeURIComponent(name);
  const nowMin = Math.floor(Date.now() / 60000);
  const [s, h, a, ev, mins] = await Promise.all([
    api(`/v1/services/${enc}`), api(`/v1/history?service=${enc}`), api("/v1/autoscaler"), api(`/v1/services/${enc}/events`),
    api(`/v1/services/${enc}/history?from=${nowMin - 180}&to=${nowMin + 1}`),
  ]);
  still(my);
  $("#now").innerHTML = `
    <tr><td>replicas</td><td>${s.ready_replicas} ready, ${s.starting_replicas} starting, target ${s.target_replicas} (${s.spec.min_replicas}-${s.spec.max_replicas})</td></tr>
    <tr><td>SLO</td><td>p${s.spec.slo.percentile} latency &le; ${fmt(s.spec.slo.latency_s * 1000, 0)} ms</td></tr>
    <tr><td>requests</td><td>${s.counters.arrivals} arrived, ${s.counters.completed} completed, ${s.counters.dropped} dropped</td></tr>
    <tr><td>router</td><td>${esc(s.url)}</td></tr>`;
  $("#conditions tbody").innerHTML = conditionRows(s.conditions);
  const pts = (h.services && h.services[name]) || [];
  const xs = pts.map(p => p.t_ms);
  const el = $("#charts");
  chart(el, "replicas", xs, [
    { label: "target", values: pts.map(p => p.target), dash: [4, 4] },
    { label: "ready", values: pts.map(p => p.ready) },
    { label: "starting", values: pts.map(p => p.starting) },
  ], { id: "replicas" });
  chart(el, "arrival rate (requests/s)", xs, [{ label: "arrivals/s", values: pts.map(p => p.arrival_rps) }], { id: "arrivals" });
  // The stored minutes of the last 3 hours and the forecast ahead, with its q50-q90 band.
  const f = s.forecast;
  const past = new Map(mins.minutes.map(m => [m.minute, m]));
  const ahead = new Map(((f && f.horizon) || []).map(p => [p.minute, p]));
  const ms = [...new Set([...past.keys(), ...ahead.keys()])].sort((x, y) => x - y);
  const at = (m, k) => (ahead.get(m) || {})[k] ?? null;
  chart(el, f ? `requests per minute, and the forecast (${f.model}, fitted ${f.fitted_at})` : "requests per minute (no forecast yet)",
    ms.map(m => m * 60000), [
      { label: "arrivals", values: ms.map(m => (past.get(m) || {}).arrivals ?? null) },
      { label: "forecast mean", values: ms.map(m => at(m, "mean")), dash: [4, 4] },
      { label: "q50", values: ms.map(m => at(m, "q50")) },
      { label: "q90", values: ms.map(m => at(m, "q90")) },
    ], { id: "forecast", bands: [{ series: [4, 3], fill: "rgba(154,103,0,0.15)" }] });
  chart(el, "latency against the SLO (ms)", xs, [
    { label: `p${s.spec.slo.percentile}`, values: pts.map(p => p.p99_latency_s == null ? null : p.p99_latency_s * 1000) },
    { label: "mean", values: pts.map(p => p.mean_latency_s == null ? null : p.mean_latency_s * 1000) },
    { label: "SLO", values: pts.map(p => p.slo_latency_s * 1000), dash: [4, 4] },
  ], { id: "latency" });
  chart(el, "utility per request (relaxed SLO utility, drops 0)", xs, [{ label: "utility", values: pts.map(p => p.utility) }], { id: "utility" });
  chart(el, "drops per interval", xs, [{ label: "dropped", values: pts.map(p => p.dropped) }], { id: "drops" });
  $("#policy").textContent = `${a.policy} (every ${a.interval_s ?? "-"} s), ${a.calls} calls`;
  const rows = [];
  for (const d of a.decisions.slice().reverse()) {
    for (const x of d.services.filter(x => x.service === name)) {
      rows.push(`<tr><td>${time(d.time_ms)}</td><td class="num">${fmt(d.policy_time_s, 0)}</td>
        <td class="num">${x.target_before} &rarr; ${x.target_after}</td><td class="num">${x.ready_replicas}</td>
        <td class="num">${x.starting_replicas}</td><td class="num">${x.queued}</td><td class="num">${x.in_flight}</td>
        <td class="num">${x.last_minute_arrivals ?? "-"}</td><td class="num">${fmt(d.free_cpus, 1)}</td>
        <td>${fmt(x.accept_rate_before)} &rarr; ${fmt(x.accept_rate_after)}</td><td>${explain(x.explanation)}</td></tr>`);
    }
  }
  $("#decisions tbody").innerHTML = rows.join("") || `<tr><td colspan="11" class="muted">no decision changed this service yet</td></tr>`;
  $("#events tbody").innerHTML = ev.events.slice().reverse().map(e =>
    `<tr><td>${time(e.time_ms)}</td><td>${esc(e.kind)}</td><td>${esc(e.message)}</td></tr>`).join("");
  ready("service");
}

// What a policy said of its decision for one service (Faro: the forecast quantile, the
// predicted rate, the predicted latency of each candidate replica count, the objective).
function explain(x) {
  if (!x) { return `<span class="muted">-</span>`; }
  const parts = [];
  if (x.quantile != null) { parts.push(`forecast quantile ${fmt(x.quantile)}`); }
  if (x.peak_rate_rps != null) { parts.push(`predicted peak ${fmt(x.peak_rate_rps, 1)} req/s`); }
  if (x.candidates) {
    parts.push("predicted latency: " + x.candidates.map(c =>
      `${c.chosen ? "<b>" : ""}${c.replicas}: ${c.latency_s == null ? "&infin;" : fmt(c.latency_s * 1000, 0) + " ms"}${c.chosen ? "</b>" : ""}`).join(", "));
  }
  if (x.objective != null) { parts.push(`objective ${fmt(x.objective, 3)}`); }
  if (x.reason) { parts.push(esc(x.reason)); }
  return parts.join("; ");
}

async function jobs() {
  main.innerHTML = `<h1>Training jobs</h1><table id="jobs"><thead><tr><th>job</th><th>name</th><th>state</th>
    <th>queue</th><th class="num">position</th><th>waiting because</th><th class="num">learners</th><th>submitted</th></tr></thead><tbody></tbody></table>`;
  const my = nav;
  const v = await api("/v1/models");
  still(my);
  $("#jobs tbody").innerHTML = v.models.map(j => `<tr data-id="${j.id}">
    <td><a href="#/jobs/${j.id}">${esc(j.model_id)}</a></td><td>${esc(j.name)}</td>
    <td class="state ${esc(j.state)}">${esc(j.state)}</td><td>${esc(j.queue)}</td>
    <td class="num">${j.queue_position ?? ""}</td><td>${esc(j.state === "QUEUED" ? j.wait_reason : "")}</td>
    <td class="num">${j.learners ?? ""}</td><td>${time(j.submitted_ms)}</td></tr>`).join("")
    || `<tr><td colspan="8" class="muted">no jobs</td></tr>`;
  ready("jobs");
}

async function job(id) {
  const my = nav;
  main.innerHTML = `<h1>Training job <span id="job-id"></span></h1>
    <p><span class="state" id="state"></span> <span id="message" class="muted"></span></p>
    <p><button id="halt">Halt</button> <button id="resume">Resume</button> <button id="delete">Delete</button>
    <span id="action-error" class="error"></span></p>
    <table class="kv" id="facts"></table>
    <div class="charts" id="charts"></div>
    <h2>Logs <select id="learner"></select> <span class="muted" id="log-status"></span></h2><pre id="logs"></pre>
    <h2>Status history</h2><table id="history"><tbody></tbody></table>
    <h2>Events</h2><table id="events"><tbody></tbody></table>`;
  let offset = 0;
  let learner = 1;
  let reading = false;
  const logs = $("#logs");
  async function refresh() {
    const [j, ev] = await Promise.all([api(`/v1/models/${id}`), api(`/v1/models/${id}/events`)]);
    still(my);
    $("#job-id").textContent = j.model_id;
    const st = $("#state");
    st.textContent = j.state;
    st.className = `state ${j.state}`;
    $("#message").textContent = j.message || "";
    $("#facts").innerHTML = `
      <tr><td>name</td><td>${esc(j.name)}</td></tr><tr><td>tenant</td><td>${esc(j.tenant)}</td></tr>
      <tr><td>queue</td><td>${esc(j.queue)} (priority ${j.priority})${j.queue_position ? `, position ${j.queue_position}` : ""}</td></tr>
      ${j.state === "QUEUED" && j.wait_reason ? `<tr><td>waiting because</td><td>${esc(j.wait_reason)}</td></tr>` : ""}
      <tr><td>learners</td><td>${j.learners} (attempt ${j.attempt}, ${j.restarts} restarts)</td></tr>
      <tr><td>submitted / started / finished</td><td>${time(j.submitted_ms)} / ${time(j.started_ms)} / ${time(j.finished_ms)}</td></tr>`;
    const sel = $("#learner");
    if (sel.options.length !== (j.learners || 1)) {
      sel.innerHTML = Array.from({ length: j.learners || 1 }, (_, i) => `<option value="${i + 1}">learner ${i + 1}</option>`).join("");
      sel.value = String(learner);
    }
    $("#history tbody").innerHTML = (j.status_history || []).map(h =>
      `<tr><td>${time(h.time_ms)}</td><td class="state ${esc(h.state)}">${esc(h.state)}</td><td>${esc(h.message)}</td></tr>`).join("");
    $("#events tbody").innerHTML = ev.events.slice().reverse().map(e =>
      `<tr><td>${time(e.time_ms)}</td><td>${esc(e.kind)}</td><td>${esc(e.message)}</td></tr>`).join("");
    return j;
  }
  async function moreLogs() {
    // One read at a time, and only of the learner shown.
    if (reading) { return; }
    reading = true;
    const want = learner;
    let page;
    try {
      page = await api(`/v1/models/${id}/logs?learner=${want}&offset=${offset}&limit=1000`);
    } finally { reading = false; }
    still(my);
    if (want !== learner || page.offset !== offset) { return; }
    if (page.lines.length) {
      const atEnd = logs.scrollTop + logs.clientHeight >= logs.scrollHeight - 4;
      logs.textContent += page.lines.join("\n") + "\n";
      if (atEnd) { logs.scrollTop = logs.scrollHeight; }
    }
    offset = page.next_offset;
    logs.dataset.lines = String(offset);
    $("#log-status").textContent = `${offset} lines, following`;
  }
  async function metrics() {
    const m = await api(`/v1/models/${id}/metrics`);
    still(my);
    const el = $("#charts");
    charts.forEach(c => c.destroy()); charts = [];
    el.innerHTML = "";
    const pts = m.points.filter(p => p.learner === 1);
    const names = Object.keys(m.last).filter(n => n !== "step");
    if (!pts.length || !names.length) { return; }
    const xs = pts.map((p, i) => p.values.step ?? i + 1);
    for (const n of names) {
      chart(el, n, xs, [{ label: n, values: pts.map(p => p.values[n] ?? null) }], { id: `metric-${n}`, time: false });
    }
  }
  $("#learner").addEventListener("change", e => {
    learner = Number(e.target.value); offset = 0; logs.textContent = ""; moreLogs();
  });
  const act = async (f) => {
    $("#action-error").textContent = "";
    try { await f(); await refresh(); } catch (e) { $("#action-error").textContent = e.message; }
  };
  $("#halt").onclick = () => act(() => api(`/v1/models/${id}`, {
    method: "PATCH", headers: { "content-type": "application/json" }, body: JSON.stringify({ status: "halt" }) }));
  $("#resume").onclick = () => act(() => api(`/v1/models/${id}`, {
    method: "PATCH", headers: { "content-type": "application/json" }, body: JSON.stringify({ status: "resume" }) }));
  $("#delete").onclick = () => act(async () => {
    if (!confirm(`Delete training-${id} and its files?`)) { return; }
    await api(`/v1/models/${id}`, { method: "DELETE" });
    location.hash = "#/jobs";
  });
  await refresh();
  await moreLogs();
  await metrics();
  still(my);
  every(1000, moreLogs);
  every(2000, refresh);
  every(5000, metrics);
  ready("job");
}

function results() {
  main.innerHTML = `<h1>Simulation results</h1>
    <p>Open a <code>results.json</code> written by <code>pharos simulate</code> (it stays in this browser).</p>
    <input type="file" id="results-file" accept=".json,application/json">
    <p id="results-error" class="error"></p><div id="results"></div>`;
  $("#results-file").addEventListener("change", async e => {
    const f = e.target.files[0];
    if (!f) { return; }
    try { showResults(JSON.parse(await f.text())); } catch (err) { $("#results-error").textContent = `not a results file: ${err.message}`; }
  });
  ready("results");
}

// A table of the scalar fields of `rows`.
function plainTable(id, rows) {
  const cols = [...new Set(rows.flatMap(r => Object.keys(r).filter(k => r[k] === null || typeof r[k] !== "object")))];
  const cell = v => typeof v === "number" ? `<td class="num">${Number.isInteger(v) ? v : fmt(v, 3)}</td>` : `<td>${esc(v)}</td>`;
  return `<table id="${id}"><thead><tr>${cols.map(c => `<th>${esc(c)}</th>`).join("")}</tr></thead><tbody>
    ${rows.map(r => `<tr>${cols.map(c => cell(r[c])).join("")}</tr>`).join("")}</tbody></table>`;
}

// Training schedulers (`kind: training`): one row per (cluster, policy).
function showTraining(r) {
  const out = $("#results");
  out.innerHTML = `<h2>${esc(r.name || "")}</h2><div class="side">${plainTable("runs", r.rows)}
    <div class="charts column" id="result-charts"></div></div>`;
  // One series per cluster and statistic, over the policies.
  const policies = [...new Set(r.rows.map(x => x.policy))];
  const clusters = [...new Set(r.rows.map(x => x.cluster))];
  const xs = policies.map((_, i) => i);
  const at = (c, p, f) => { const x = r.rows.find(y => y.cluster === c && y.policy === p); return x ? f(x) : null; };
  const series = clusters.flatMap(c => [
    { label: `mean JCT (${c})`, values: policies.map(p => at(c, p, x => x.mean_jct_h)) },
    { label: `p95 JCT (${c})`, values: policies.map(p => at(c, p, x => x.p95_jct_h)), dash: [4, 4] },
  ]);
  chart($("#result-charts"), "job completion time, hours, per policy", xs, series, {
    id: "violations", time: false, width: 620, height: 340,
    xvalues: (_, ticks) => ticks.map(t => Number.isInteger(t) ? policies[t] || "" : ""),
  });
  ready("results-shown");
}

// Function graphs (`kind: graph`): per (capacity, load, policy), each app's mean and p99
// response, failed share and resource-seconds.
function showGraphs(r) {
  const rows = r.cells.flatMap(c => c.apps.map(([app, mean, p99, failed, rs]) => ({
    capacity: c.capacity, load: c.load, policy: c.policy, app,
    mean_response_s: mean, p99_response_s: p99, failed, resource_s: rs,
  })));
  $("#results").innerHTML = `<h2>${esc(r.name || "")}</h2>${plainTable("runs", rows)}`;
  ready("results-shown");
}

function showResults(r) {
  charts.forEach(c => c.destroy()); charts = [];
  if (r && Array.isArray(r.rows)) { return showTraining(r); }
  if (r && Array.isArray(r.cells)) { return showGraphs(r); }
  if (!r || !Array.isArray(r.runs)) { throw new Error("no runs, rows or cells in it"); }
  const out = $("#results");
  // Mean over seeds per (policy, capacity).
  const groups = new Map();
  for (const run of r.runs) {
    const k = `${run.policy}\u0000${run.cpus}`;
    if (!groups.has(k)) { groups.set(k, []); }
    groups.get(k).push(run);
  }
  const mean = (rs, f) => rs.reduce((s, x) => s + (f(x) ?? 0), 0) / rs.length;
  const rows = [...groups.values()].map(rs => ({
    policy: rs[0].policy, cpus: rs[0].cpus, seeds: rs.length,
    violations: mean(rs, x => x.slo_violation_rate), lost: mean(rs, x => x.lost_utility),
    dropped: mean(rs, x => x.requests ? x.dropped / x.requests : 0),
  })).sort((a, b) => a.cpus - b.cpus || a.violations - b.violations);
  out.innerHTML = `<h2>${esc(r.experiment || "")}</h2><p class="muted">${esc(r.description || "")}</p>
    <div class="side"><table id="runs"><thead><tr><th>policy</th><th class="num">vCPUs</th><th class="num">seeds</th>
    <th class="num">SLO violations</th><th class="num">lost utility</th><th class="num">dropped</th></tr></thead><tbody>
    ${rows.map(x => `<tr><td>${esc(x.policy)}</td><td class="num">${esc(x.cpus)}</td><td class="num">${x.seeds}</td>
      <td class="num">${fmt(x.violations * 100)}%</td><td class="num">${fmt(x.lost, 3)}</td><td class="num">${fmt(x.dropped * 100)}%</td></tr>`).join("")}
    </tbody></table><div class="charts column" id="result-charts"></div></div>`;
  const cpus = [...new Set(rows.map(x => x.cpus))].sort((a, b) => a - b);
  const policies = [...new Set(rows.map(x => x.policy))];
  const at = (p, c, f) => { const x = rows.find(y => y.policy === p && y.cpus === c); return x ? f(x) : null; };
  const el = $("#result-charts");
  chart(el, "SLO violation rate (%) by capacity", cpus,
    policies.map(p => ({ label: p, values: cpus.map(c => at(p, c, x => x.violations * 100)) })),
    { id: "violations", time: false, width: 620, height: 280 });
  chart(el, "lost utility by capacity", cpus,
    policies.map(p => ({ label: p, values: cpus.map(c => at(p, c, x => x.lost)) })),
    { id: "lost", time: false, width: 620, height: 280 });
  ready("results-shown");
}

// ----- shell ------------------------------------------------------------------------

async function route() {
  reset();
  const my = ++nav;
  const [, page, arg] = (location.hash || "#/cluster").split("/");
  for (const a of document.querySelectorAll("#nav a")) {
    a.classList.toggle("active", a.getAttribute("href") === `#/${page}`);
  }
  try {
    if (page === "services" && arg) { await service(decodeURIComponent(arg)); }
    else if (page === "services") { await services(); }
    else if (page === "graphs") { await graphs(); }
    else if (page === "jobs" && arg) { await job(Number(arg)); }
    else if (page === "jobs") { await jobs(); }
    else if (page === "results") { results(); }
    else { await cluster(); }
  } catch (e) {
    if (e instanceof Stale || my !== nav) { return; }
    if (e instanceof AuthError) { logout(e.message); return; }
    main.innerHTML = `<p class="error">${esc(e.message)}</p>`;
    ready("error");
  }
}

function logout(why) {
  reset();
  nav++;
  $("#token").value = "";
  sessionStorage.removeItem("pharos-token");
  main.innerHTML = "";
  $("#nav").hidden = true; $("#logout").hidden = true; $("#who").textContent = "";
  $("#login").hidden = false;
  $("#login-error").textContent = why || "";
  ready("login");
}

async function login(t) {
  sessionStorage.setItem("pharos-token", t);
  try {
    await api("/v1/models?state=QUEUED");
  } catch (e) {
    logout(e instanceof AuthError ? "that token was refused" : e.message);
    return;
  }
  $("#login").hidden = true; $("#nav").hidden = false; $("#logout").hidden = false;
  $("#who").textContent = "logged in";
  route();
}

$("#login").addEventListener("submit", e => { e.preventDefault(); login($("#token").value.trim()); });
$("#logout").addEventListener("click", () => logout());
window.addEventListener("hashchange", () => { if (token()) { route(); } });
if (token()) { login(token()); } else { logout(); }
