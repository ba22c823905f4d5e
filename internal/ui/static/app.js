// The orderexpiry dashboard. Everything it shows comes from the service's
// REST API on this same origin: GET /v1/stats (polled every second), the
// watch GET /v1/expirations:watch as Server-Sent Events, GET
// /v1/orders/{id}, GET /v1/orders (the search), POST /v1/groups/{id}:redrive
// and the bulk changes (POST /v1/orders:bulkChange, GET /v1/operations/{id}).
// Data from the service
// is only ever put into the page as text (textContent), never as markup.
"use strict";

const TOKEN_KEY = "orderexpiry.token";
const STATS_EVERY_MS = 1000;
const CHART_WINDOW_MS = 5 * 60 * 1000;
const EVENTS_SHOWN = 200;

const $ = (id) => document.getElementById(id);

// ---- token ----------------------------------------------------------------

// authHeaders are the headers that carry the token, when the tab has one.
function authHeaders() {
  const t = sessionStorage.getItem(TOKEN_KEY);
  return t ? { Authorization: "Bearer " + t } : {};
}

let asking = null;

// askToken opens the token dialog once, whoever asks, and resolves when a
// token is entered.
function askToken(message) {
  const err = $("token-error");
  err.hidden = !message;
  err.textContent = message || "";
  if (!asking) {
    asking = new Promise((resolve) => {
      const form = $("token-form");
      const done = (ev) => {
        ev.preventDefault();
        const t = $("token-input").value.trim();
        if (!t) return;
        sessionStorage.setItem(TOKEN_KEY, t);
        $("token-input").value = "";
        form.removeEventListener("submit", done);
        $("token-dialog").close();
        asking = null;
        showForget();
        resolve();
      };
      form.addEventListener("submit", done);
      $("token-dialog").showModal();
    });
  }
  return asking;
}

function showForget() {
  $("forget-token").hidden = !sessionStorage.getItem(TOKEN_KEY);
}

// api calls the REST API with the token, asking for one and trying again
// on 401. It returns the parsed JSON body, or throws an Error with the
// service's message.
async function api(path, init = {}) {
  for (;;) {
    const resp = await fetch(path, { ...init, headers: { ...(init.headers || {}), ...authHeaders() } });
    if (resp.status === 401) {
      const body = await resp.json().catch(() => ({}));
      await askToken(sessionStorage.getItem(TOKEN_KEY) ? "The service refused the token: " + (body.message || "401") : "");
      continue;
    }
    const body = await resp.json().catch(() => null);
    if (!resp.ok) {
      const e = new Error((body && body.message) || resp.status + " " + resp.statusText);
      e.status = resp.status;
      throw e;
    }
    return body;
  }
}

// ---- formatting -------------------------------------------------------------

// seconds reads a protobuf JSON Duration ("1.5s").
function seconds(d) {
  return d ? parseFloat(d) : NaN;
}

function fmtDuration(s) {
  if (!isFinite(s)) return "–";
  const a = Math.abs(s);
  if (a < 1) return (s * 1000).toFixed(a < 0.01 ? 1 : 0) + " ms";
  if (a < 60) return s.toFixed(1) + " s";
  if (a < 3600) return (s / 60).toFixed(1) + " min";
  return (s / 3600).toFixed(1) + " h";
}

function fmtTime(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  return d.toLocaleTimeString([], { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
}

function fmtCount(n) {
  return Number(n || 0).toLocaleString("en-US");
}

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const c of cells) tr.append(c instanceof Node ? c : el("td", String(c)));
  return tr;
}

// ---- stats ------------------------------------------------------------------

let lastStats = null;
let redriving = new Set();

async function pollStats() {
  try {
    const st = await api("/v1/stats");
    lastStats = st;
    $("stats-error").hidden = true;
    renderStats(st);
  } catch (e) {
    $("stats-error").hidden = false;
    $("stats-error").textContent = "GET /v1/stats: " + e.message;
  } finally {
    setTimeout(pollStats, STATS_EVERY_MS);
  }
}

function renderStats(st) {
  const o = st.orders || {};
  for (const k of ["pending", "expired", "completed", "cancelled"]) $("count-" + k).textContent = fmtCount(o[k]);
  $("counted-since").textContent = o.countedSince ? new Date(o.countedSince).toLocaleString() : "the store's first start";
  $("read-time").textContent = "stats at " + fmtTime(st.readTime);
  const rep = st.replica || {};
  $("watchers").textContent = String(rep.watchers || 0);
  const lat = rep.lateness || {};
  $("lat-window").textContent = fmtDuration(seconds(lat.window));
  $("lat-count").textContent = fmtCount(lat.count);
  $("lat-p50").textContent = fmtDuration(seconds(lat.p50));
  $("lat-p99").textContent = fmtDuration(seconds(lat.p99));
  $("lat-max").textContent = fmtDuration(seconds(lat.max));

  const readAt = Date.parse(st.readTime);
  const parts = $("partitions").tBodies[0];
  parts.replaceChildren(...(st.partitions || []).map((p) => {
    let next = "none pending";
    if (p.nextDeadline) {
      const inS = (Date.parse(p.nextDeadline) - readAt) / 1000;
      next = fmtTime(p.nextDeadline) + (inS >= 0 ? " (in " + fmtDuration(inS) + ")" : " (due)");
    }
    const tr = row([String(p.partition || 0), fmtCount(p.pending), next, fmtCount(p.events)]);
    tr.dataset.partition = String(p.partition || 0);
    return tr;
  }));

  const groups = st.consumerGroups || [];
  $("groups-empty").hidden = groups.length > 0;
  $("groups").tBodies[0].replaceChildren(...groups.map((g) => {
    const dead = Number(g.deadLetters || 0);
    const btn = el("button", "redrive", "redrive");
    btn.type = "button";
    btn.disabled = dead === 0 || redriving.has(g.groupId);
    btn.addEventListener("click", () => redrive(g.groupId, dead));
    const td = el("td");
    td.append(btn);
    const tr = row([
      el("td", g.groupId, "group-id"),
      el("td", fmtCount(g.backlog), "backlog"),
      el("td", fmtCount(g.inFlight), "in-flight"),
      el("td", fmtCount(dead), "dead-letters"),
      el("td", fmtDuration(seconds(g.oldestUnackedAge)), "oldest"),
      td,
    ]);
    tr.dataset.group = g.groupId;
    return tr;
  }));
}

async function redrive(group, dead) {
  const out = $("redrive-result");
  redriving.add(group);
  if (lastStats) renderStats(lastStats);
  const yes = await confirmIn("redrive-confirm",
    "Redrive " + fmtCount(dead) + (dead === 1 ? " dead letter" : " dead letters") + " of " + group +
    "? They are delivered again, from their first attempt.");
  if (!yes) {
    redriving.delete(group);
    if (lastStats) renderStats(lastStats);
    out.textContent = "Redrive of " + group + " not done.";
    return;
  }
  try {
    const r = await api("/v1/groups/" + encodeURIComponent(group) + ":redrive", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ all: true }),
    });
    const n = Number(r.redriven || 0);
    out.textContent = "Redrove " + fmtCount(r.redriven) + (n === 1 ? " dead letter of " : " dead letters of ") + group + ".";
  } catch (e) {
    out.textContent = "Redrive of " + group + " failed: " + e.message;
  } finally {
    redriving.delete(group);
  }
}

// ---- live expirations ---------------------------------------------------------

let cursor = "";
let received = 0;
const points = []; // {at: ms (expired_at), late: seconds}

function setConn(state, text) {
  const c = $("conn");
  c.dataset.state = state;
  c.textContent = text;
}

// watch reads the watch as Server-Sent Events through fetch, which, unlike
// EventSource, can send the Authorization header. When the stream ends it
// reconnects after a second, resuming after the last cursor it received.
async function watch() {
  for (;;) {
    try {
      const q = cursor ? "?after_cursor=" + encodeURIComponent(cursor) : "";
      const resp = await fetch("/v1/expirations:watch" + q, { headers: { Accept: "text/event-stream", ...authHeaders() } });
      if (resp.status === 401) {
        await askToken(sessionStorage.getItem(TOKEN_KEY) ? "The service refused the token." : "");
        continue;
      }
      if (!resp.ok) {
        const body = await resp.json().catch(() => ({}));
        // A cursor older than retention cannot resume: start live again.
        if (resp.status === 410) cursor = "";
        throw new Error(body.message || resp.status + " " + resp.statusText);
      }
      setConn("live", "live");
      await readSSE(resp.body);
      setConn("connecting", "reconnecting…");
    } catch (e) {
      setConn("error", "watch: " + e.message);
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
}

async function readSSE(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value;
    let i;
    while ((i = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, i);
      buf = buf.slice(i + 2);
      sseBlock(block);
    }
  }
}

function sseBlock(block) {
  let type = "message";
  let data = "";
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) type = line.slice(6).trim();
    else if (line.startsWith("data:")) data += line.slice(5).trim();
  }
  if (!data) return; // a comment (heartbeat) or the retry preamble
  const msg = JSON.parse(data);
  if (type === "watch-error") {
    setConn("error", "watch ended: " + msg.message);
    return;
  }
  onExpiration(msg);
}

function onExpiration(ev) {
  cursor = ev.cursor;
  received++;
  const dl = Date.parse(ev.deadline);
  const at = Date.parse(ev.expiredAt);
  const late = (at - dl) / 1000;
  points.push({ at, late });
  const md = Object.entries(ev.metadata || {}).map(([k, v]) => k + "=" + v).join(" ");
  const tr = row([fmtTime(new Date().toISOString()), el("td", ev.orderId, "order-id"), fmtTime(ev.deadline), fmtDuration(late), el("td", md, "md")]);
  tr.dataset.order = ev.orderId;
  const tbody = $("events").tBodies[0];
  tbody.prepend(tr);
  while (tbody.rows.length > EVENTS_SHOWN) tbody.lastElementChild.remove();
  $("events-count").textContent = fmtCount(received);
}

// ---- lateness chart -------------------------------------------------------------

const SVG = "http://www.w3.org/2000/svg";

function svgEl(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

// niceMax rounds a lateness in seconds up to 1, 2 or 5 times a power of 10.
function niceMax(s) {
  let m = 0.001;
  for (;;) {
    for (const f of [1, 2, 5]) if (m * f >= s) return m * f;
    m *= 10;
  }
}

// drawChart draws each expiration of the last five minutes, x its expiry
// time, y its lateness.
function drawChart() {
  const svg = $("lateness-chart");
  // The drawing's units are the element's pixels, so that the text keeps
  // its size whatever the width.
  const W = Math.max(svg.clientWidth, 300), H = 200, L = 60, R = 10, T = 10, B = 24;
  svg.setAttribute("viewBox", "0 0 " + W + " " + H);
  const now = Date.now();
  while (points.length && points[0].at < now - CHART_WINDOW_MS) points.shift();
  // This replica's p99 of the last minutes, from the stats, is drawn as a
  // line: the range takes it in.
  const p99 = seconds(lastStats && lastStats.replica && lastStats.replica.lateness && lastStats.replica.lateness.p99);
  const top = niceMax(Math.max(0.001, isFinite(p99) ? p99 : 0, ...points.map((p) => p.late)));
  const x = (t) => L + ((t - (now - CHART_WINDOW_MS)) / CHART_WINDOW_MS) * (W - L - R);
  const y = (s) => T + (1 - Math.min(Math.max(s, 0), top) / top) * (H - T - B);
  const kids = [];
  for (let i = 0; i <= 4; i++) {
    const v = (top * i) / 4;
    kids.push(svgEl("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "axis" }));
    kids.push(svgEl("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end", class: "tick" }, fmtDuration(v)));
  }
  for (let m = 0; m <= 5; m++) {
    const t = now - CHART_WINDOW_MS + m * 60000;
    kids.push(svgEl("text", { x: x(t), y: H - 6, "text-anchor": "middle", class: "tick" }, m === 5 ? "now" : "−" + (5 - m) + " min"));
  }
  for (const p of points) kids.push(svgEl("circle", { cx: x(p.at), cy: y(p.late), r: 3, class: "dot" }));
  if (isFinite(p99)) {
    kids.push(svgEl("line", { x1: L, x2: W - R, y1: y(p99), y2: y(p99), class: "p99" }));
    kids.push(svgEl("text", { x: W - R - 4, y: y(p99) - 4, "text-anchor": "end", class: "tick" }, "replica p99 " + fmtDuration(p99)));
  }
  svg.replaceChildren(...kids);
}

// ---- order lookup -------------------------------------------------------------

async function lookup(ev) {
  ev.preventDefault();
  const id = $("lookup-input").value.trim();
  const out = $("lookup-result");
  const err = $("lookup-error");
  out.replaceChildren();
  err.hidden = true;
  if (!id) return;
  try {
    const o = await api("/v1/orders/" + encodeURIComponent(id));
    const fields = [
      ["order", o.orderId],
      ["status", String(o.status || "").replace("ORDER_STATUS_", "").toLowerCase()],
      ["created", o.createdAt ? new Date(o.createdAt).toLocaleString() : "–"],
      ["deadline", o.deadline ? new Date(o.deadline).toLocaleString() : "–"],
    ];
    if (o.ttlRemaining) fields.push(["remaining", fmtDuration(seconds(o.ttlRemaining))]);
    if (o.closedAt) fields.push(["closed", new Date(o.closedAt).toLocaleString()]);
    fields.push(["reschedules", String(o.reschedules || 0)]);
    for (const [k, v] of Object.entries(o.metadata || {})) fields.push(["metadata " + k, v]);
    for (const [k, v] of fields) {
      const dd = el("dd", v);
      dd.dataset.field = k;
      out.append(el("dt", k), dd);
    }
  } catch (e) {
    err.hidden = false;
    err.textContent = e.message;
  }
}

// ---- search -------------------------------------------------------------------

const SEARCH_PAGE = 25;
// The search shown: its filter and order, the page tokens of the pages
// before (tokens[i] fetches page i; page 0 has none) and the page number.
const search = { filter: "", orderBy: "deadline", tokens: [""], page: 0, next: "" };

async function showPage() {
  const err = $("search-error");
  const tbody = $("search-results").tBodies[0];
  $("search-prev").disabled = $("search-next").disabled = true;
  const q = new URLSearchParams({ filter: search.filter, orderBy: search.orderBy, pageSize: String(SEARCH_PAGE) });
  const token = search.tokens[search.page];
  if (token) q.set("pageToken", token);
  try {
    const r = await api("/v1/orders?" + q.toString());
    err.hidden = true;
    const orders = r.orders || [];
    search.next = r.nextPageToken || "";
    tbody.replaceChildren(...orders.map((o) => {
      const md = Object.entries(o.metadata || {}).map(([k, v]) => k + "=" + v).join(" ");
      const tr = row([
        el("td", o.orderId, "order-id"),
        el("td", String(o.status || "").replace("ORDER_STATUS_", "").toLowerCase(), "status"),
        el("td", o.deadline ? new Date(o.deadline).toLocaleString() : "–", "deadline"),
        el("td", o.ttlRemaining ? fmtDuration(seconds(o.ttlRemaining)) : "–", "remaining"),
        el("td", md, "md"),
      ]);
      tr.dataset.order = o.orderId;
      return tr;
    }));
    // A page may be short, even empty, and still have a next one: the
    // service examines a bounded number of orders a call.
    let text = "page " + (search.page + 1) + ": " + orders.length + (orders.length === 1 ? " order" : " orders");
    if (orders.length < SEARCH_PAGE && search.next) text += " (the service stopped looking here; there may be more)";
    else if (!search.next) text += ", the last page";
    $("search-page").textContent = text;
    $("search-prev").disabled = search.page === 0;
    $("search-next").disabled = !search.next;
  } catch (e) {
    tbody.replaceChildren();
    err.hidden = false;
    err.textContent = e.message;
    $("search-page").textContent = "";
    $("search-prev").disabled = search.page === 0;
  }
}

function startSearch(ev) {
  ev.preventDefault();
  search.filter = $("search-filter").value.trim();
  search.orderBy = $("search-order").value;
  search.tokens = [""];
  search.page = 0;
  showPage();
}

function nextPage() {
  if (!search.next) return;
  search.page++;
  search.tokens[search.page] = search.next;
  showPage();
}

function prevPage() {
  if (search.page === 0) return;
  search.page--;
  showPage();
}

// ---- confirmations ------------------------------------------------------------

// confirmIn shows the confirmation box id with text, and resolves true when
// its confirm button is pressed, false for its cancel button. An action
// that changes many things waits for it.
function confirmIn(id, text) {
  const box = $(id);
  box.querySelector(".confirm-text").textContent = text;
  box.hidden = false;
  return new Promise((resolve) => {
    const yes = box.querySelector("button.confirm-yes");
    const no = box.querySelector("button.confirm-no");
    const done = (v) => {
      yes.onclick = null;
      no.onclick = null;
      box.hidden = true;
      resolve(v);
    };
    yes.onclick = () => done(true);
    no.onclick = () => done(false);
    yes.focus();
  });
}

// ---- bulk changes ---------------------------------------------------------------

// bulkRequest builds a BulkChangeOrders request from the form.
function bulkRequest(dryRun) {
  const req = { filter: $("bulk-filter").value.trim(), dryRun };
  const v = $("bulk-value").value.trim();
  switch ($("bulk-action").value) {
    case "shift": req.shift = v; break;
    case "ttl": req.ttl = v; break;
    case "cancel": req.cancel = true; break;
  }
  return req;
}

// runOperation starts a bulk operation and polls it until it is done,
// showing its progress in out; it returns the operation.
async function runOperation(req, out) {
  let op = await api("/v1/orders:bulkChange", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(req),
  });
  while (!op.done) {
    const m = op.metadata || {};
    out.textContent = "Running " + op.name + ": matched " + fmtCount(m.matched) + ", changed " + fmtCount(m.changed) + "…";
    await new Promise((r) => setTimeout(r, 250));
    op = await api("/v1/" + op.name);
  }
  return op;
}

// bulk previews a bulk change with a dry run, asks for confirmation with
// its count, and runs it.
async function bulk(ev) {
  ev.preventDefault();
  const out = $("bulk-result");
  const button = $("bulk-button");
  button.disabled = true;
  try {
    const dry = await runOperation(bulkRequest(true), out);
    const n = Number((dry.metadata || {}).matched || 0);
    const what = $("bulk-action").value === "cancel" ? "Cancel" : ($("bulk-action").value === "shift" ? "Shift by " : "Set a ttl of ") + $("bulk-value").value.trim() + " for";
    if (!await confirmIn("bulk-confirm", what + " " + fmtCount(n) + (n === 1 ? " pending order" : " pending orders") + " matching " +
        JSON.stringify($("bulk-filter").value.trim()) + " (counted by a dry run just now)?")) {
      out.textContent = "Not done: nothing was changed.";
      return;
    }
    const op = await runOperation(bulkRequest(false), out);
    const m = op.metadata || {};
    out.textContent = "Done: matched " + fmtCount(m.matched) + ", changed " + fmtCount(m.changed) + ", skipped " +
      fmtCount(m.skipped) + ", failed " + fmtCount(m.failed) + ".";
  } catch (e) {
    out.textContent = "Bulk change failed: " + e.message;
  } finally {
    button.disabled = false;
  }
}

// ---- start --------------------------------------------------------------------

function start() {
  $("lookup-form").addEventListener("submit", lookup);
  $("search-form").addEventListener("submit", startSearch);
  $("search-next").addEventListener("click", nextPage);
  $("search-prev").addEventListener("click", prevPage);
  $("bulk-form").addEventListener("submit", bulk);
  $("bulk-action").addEventListener("change", () => { $("bulk-value").disabled = $("bulk-action").value === "cancel"; });
  $("forget-token").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    location.reload();
  });
  showForget();
  drawChart();
  setInterval(drawChart, 1000);
  pollStats();
  watch();
}

start();
