// StreamDyCoke console: the camera wall, a camera's page, the alert inbox. Plain JavaScript, no build step.
// Every request rides the session cookie; requests that change state send the CSRF token (guard.py).
"use strict";

const PAGE = 48;               // tiles per page of the wall
const SNAPSHOT_EVERY_MS = 1000; // a visible tile's picture is refreshed about once a second
const STATS_EVERY_MS = 2000;
const MAX_ALERTS = 500;         // alerts kept in the page (the feed replays at most the cache's alerts_max)

const $ = (sel, root = document) => root.querySelector(sel);
const el = (tag, attrs = {}, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") e.className = v; else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v === true ? "" : v);
  }
  for (const kid of kids) if (kid !== null && kid !== undefined) e.append(kid);
  return e;
};
const cookie = (name) => (document.cookie.split("; ").find((c) => c.startsWith(name + "=")) || "").slice(name.length + 1);
const fmt = (x, digits = 0) => (x === null || x === undefined || Number.isNaN(x)) ? "–" : Number(x).toFixed(digits);
const pct = (x) => (x === null || x === undefined) ? "–" : (100 * x).toFixed(1) + "%";
const when = (ts) => ts ? new Date(ts * 1000).toLocaleTimeString() : "–";
const enc = encodeURIComponent;

async function api(path, opts = {}) {
  const headers = Object.assign({}, opts.headers || {});
  if (opts.method && opts.method !== "GET") headers["X-CSRF-Token"] = cookie("sdk_csrf");
  const res = await fetch(path, Object.assign({}, opts, { headers, credentials: "same-origin" }));
  if (res.status === 401) { location.href = "/ui/login"; throw new Error("signed out"); }
  return res;
}
async function json(path, opts) {
  const res = await api(path, opts);
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error((body.detail || (body.error && body.error.message) || res.statusText) + ` (${res.status})`);
  return body;
}

// ---- alerts: one live feed for the whole page --------------------------------------------------------
const alerts = { list: [], acked: {}, listeners: new Set(), source: null };

let pendingRedraw = null;
function alertsChanged() {  // batched: a replay of thousands of alerts redraws once, not once per alert
  if (pendingRedraw === null) pendingRedraw = setTimeout(() => { pendingRedraw = null; redrawAlerts(); }, 50);
}
function redrawAlerts() {
  const open = alerts.list.filter((a) => a.state === "raised" && !alerts.acked[a.id]).length;
  const badge = $("#alert-badge");
  badge.hidden = open === 0;
  badge.textContent = String(open);
  for (const f of alerts.listeners) f();
}

async function startAlerts() {
  try { alerts.acked = (await json("/v1/alerts/acked")).acked || {}; } catch (e) { /* shown by the feed state */ }
  const src = new EventSource("/v1/alerts?since=0");
  alerts.source = src;
  src.addEventListener("open", () => { $("#feed-state").textContent = "live"; $("#feed-state").className = "ok"; });
  src.addEventListener("error", () => { $("#feed-state").textContent = "reconnecting…"; $("#feed-state").className = "warn"; });
  src.addEventListener("alert", (ev) => {
    const a = JSON.parse(ev.data);
    a._received = Date.now() / 1000;
    a._eid = ev.lastEventId;
    alerts.list.unshift(a);
    if (alerts.list.length > MAX_ALERTS) alerts.list.length = MAX_ALERTS;
    alertsChanged();
  });
}

async function acknowledge(id) {
  const out = await json(`/v1/alerts/${enc(id)}/ack`, { method: "POST" });
  alerts.acked[id] = out.acked_ts;
  redrawAlerts();
}

function alertCard(a) {  // a record another producer wrote may lack fields: shown as far as it goes
  try { return fullAlertCard(a); } catch (e) {
    return el("article", { class: "alert malformed", "data-alert": String(a.id || ""), "data-camera": String(a.camera || "") },
              el("div", { class: "body muted", text: `an alert record this console cannot read: ${JSON.stringify(a).slice(0, 300)}` }));
  }
}
function fullAlertCard(a) {
  const snap = a.evidence && a.evidence.snapshot;
  const win = a.window || {};
  const acked = alerts.acked[a.id];
  return el("article", { class: `alert ${a.state} ${acked ? "acked" : ""}`, "data-alert": a.id, "data-camera": a.camera,
                         "data-received": String(a._received || ""), "data-decided": String(a.decided_ts) },
    snap ? el("img", { class: "evidence", src: snap.url, loading: "lazy", alt: `frame ${snap.frame} of ${a.camera}`,
                       title: `frame ${snap.frame}, captured ${when(snap.ts)}`, "data-shown": a._shown ? String(a._shown) : null,
                       // when the evidence was first on screen (the inbox redraws its cards; the first load counts)
                       onload: (ev) => { a._shown = a._shown || Date.now() / 1000; ev.target.dataset.shown = String(a._shown); } })
         : el("div", { class: "evidence none", text: "no snapshot" }),
    el("div", { class: "body" },
      el("div", { class: "head" },
        el("span", { class: `state ${a.state}`, text: a.state }),
        el("a", { href: `#/camera/${enc(a.camera)}`, text: a.camera }),
        el("span", { class: "muted", text: ` · ${a.query} · ${when(a.decided_ts)}` })),
      el("div", { class: "prompt", text: a.prompt || "" }),
      el("div", { class: "answer", text: a.answer || "" }),
      el("div", { class: "muted small", text:
        `trigger ${a.trigger} at ${when(a.trigger_ts)} · decided in ${fmt(1000 * a.latency_s)} ms · window ` +
        `${fmt(win.frames)} frames, ${fmt(win.visual_tokens)} visual tokens · ${a.answerer || "–"}` }),
      a.state === "raised"
        ? (acked ? el("span", { class: "muted small", text: `acknowledged ${when(acked)}` })
                 : el("button", { class: "ack", onclick: (ev) => { ev.target.disabled = true; acknowledge(a.id).catch(showError); },
                                  text: "Acknowledge" }))
        : null));
}

// ---- the camera wall ----------------------------------------------------------------------------------
function statusOf(cam, stats, fleet) {
  if (fleet && fleet.refused && fleet.refused[cam]) return ["refused", fleet.refused[cam]];
  if (fleet && fleet.unplaced && fleet.unplaced[cam]) return ["unplaced", fleet.unplaced[cam]];
  const faults = Object.values(stats.faults || {}).reduce((x, y) => x + y, 0);
  if (stats.status === "recovering") return ["recovering", stats.last_fault || ""];
  if (faults) return ["faults", `${faults} faults; last: ${stats.last_fault || ""}`];
  return [stats.status || "unknown", ""];
}

function renderWall(view, params) {
  let offset = Math.max(0, parseInt(params.get("offset") || "0", 10));
  const filter = params.get("q") || "";
  const grid = el("div", { class: "wall", id: "wall" });
  const pager = el("div", { class: "pager" });
  const search = el("input", { type: "search", placeholder: "filter cameras", value: filter, id: "filter",
    onchange: (ev) => { location.hash = `#/?q=${enc(ev.target.value)}`; } });
  view.replaceChildren(el("div", { class: "toolbar" }, el("h2", { text: "Cameras" }), search, pager), grid);
  const tiles = new Map();
  const visible = new Set();
  const observer = new IntersectionObserver((entries) => {
    for (const e of entries) { const cam = e.target.dataset.camera; if (e.isIntersecting) visible.add(cam); else visible.delete(cam); }
  });

  async function refreshStats() {
    const [list, fleet] = await Promise.all([
      json(`/v1/cameras?offset=${filter ? 0 : offset}&limit=${filter ? 1000 : PAGE}`),
      json("/v1/fleet").catch(() => null)]);
    let names = Object.keys(list.cameras);
    for (const extra of Object.keys(Object.assign({}, fleet && fleet.refused, fleet && fleet.unplaced)))
      if (!names.includes(extra)) names.push(extra);   // a camera with no frames yet still has a tile
    if (filter) names = names.filter((n) => n.includes(filter));
    const total = filter ? names.length : list.total;
    pager.replaceChildren(
      el("button", { disabled: offset === 0 || filter ? true : null, onclick: () => { location.hash = `#/?offset=${Math.max(0, offset - PAGE)}`; }, text: "‹" }),
      el("span", { class: "muted", text: total ? ` ${filter ? 1 : offset + 1}–${filter ? total : Math.min(offset + PAGE, total)} of ${total} ` : " no cameras yet " }),
      el("button", { disabled: filter || offset + PAGE >= total ? true : null, onclick: () => { location.hash = `#/?offset=${offset + PAGE}`; }, text: "›" }));
    for (const cam of names) {
      const s = list.cameras[cam] || {};
      let tile = tiles.get(cam);
      if (!tile) {
        tile = el("a", { class: "tile", href: `#/camera/${enc(cam)}`, "data-camera": cam },
          el("img", { class: "snap", alt: `latest frame of ${cam}`, loading: "lazy" }),
          el("div", { class: "caption" }, el("strong", { text: cam }), el("span", { class: "status" })),
          el("div", { class: "figures muted small" }));
        grid.append(tile); tiles.set(cam, tile); observer.observe(tile);
      }
      const [status, why] = statusOf(cam, s, fleet);
      const st = $(".status", tile);
      st.textContent = status; st.className = `status ${status}`; st.title = why;
      tile.dataset.status = status;
      $(".figures", tile).textContent =
        `keep ${pct(s.keep_ratio)} · f→cache p99 ${fmt(s.frame_to_cache_p99_ms)} ms · lag ${fmt(s.lag)}`;
    }
  }
  function refreshSnapshots() {
    for (const cam of visible) {
      const img = $("img.snap", tiles.get(cam));
      if (!img || img.dataset.loading === "1") continue;
      img.dataset.loading = "1";
      const next = new Image();
      next.onload = () => { img.src = next.src; img.dataset.loading = ""; img.dataset.loaded = "1"; };
      next.onerror = () => { img.dataset.loading = ""; };
      next.src = `/v1/cameras/${enc(cam)}/snapshot?t=${Date.now()}`;
    }
  }
  refreshStats().catch(showError);
  const timers = [setInterval(() => refreshStats().catch(showError), STATS_EVERY_MS),
                  setInterval(refreshSnapshots, SNAPSHOT_EVERY_MS)];
  setTimeout(refreshSnapshots, 200);
  return () => { timers.forEach(clearInterval); observer.disconnect(); };
}

// ---- a camera's page --------------------------------------------------------------------------------
function keepChart(history, width = 560, height = 120) {
  // keep ratio per frame over the last minutes, as an SVG polyline (x: capture time, y: 0..100%)
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`); svg.setAttribute("class", "chart");
  if (!history.length) return svg;
  const t0 = history[0][0], t1 = Math.max(history[history.length - 1][0], t0 + 1e-6);
  const pts = history.map(([t, kept, n]) => `${((t - t0) / (t1 - t0) * (width - 40) + 35).toFixed(1)},` +
                                          `${(height - 15 - (kept / n) * (height - 25)).toFixed(1)}`);
  for (const [y, label] of [[0, "0%"], [0.5, "50%"], [1, "100%"]]) {
    const yy = height - 15 - y * (height - 25);
    const line = document.createElementNS(ns, "line");
    Object.entries({ x1: 35, x2: width, y1: yy, y2: yy, class: "gridline" }).forEach(([k, v]) => line.setAttribute(k, v));
    const text = document.createElementNS(ns, "text");
    Object.entries({ x: 0, y: yy + 4, class: "axis" }).forEach(([k, v]) => text.setAttribute(k, v));
    text.textContent = label; svg.append(line, text);
  }
  const poly = document.createElementNS(ns, "polyline");
  poly.setAttribute("points", pts.join(" ")); poly.setAttribute("class", "series");
  const caption = document.createElementNS(ns, "text");
  Object.entries({ x: 35, y: height - 1, class: "axis" }).forEach(([k, v]) => caption.setAttribute(k, v));
  caption.textContent = `keep ratio per processed frame, ${when(t0)} – ${when(t1)}`;
  svg.append(poly, caption);
  return svg;
}

function tokensChart(history, width = 560, height = 120) {
  // tokens over the last minutes, cumulative: every processed frame's tokens in (uncompressed) and those kept
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`); svg.setAttribute("class", "chart tokens");
  if (!history.length) return svg;
  const t0 = history[0][0], t1 = Math.max(history[history.length - 1][0], t0 + 1e-6);
  let sumIn = 0, sumKept = 0;
  const rows = history.map(([t, kept, n]) => { sumIn += n; sumKept += kept; return [t, sumIn, sumKept]; });
  const x = (t) => ((t - t0) / (t1 - t0) * (width - 40) + 35).toFixed(1);
  const y = (v) => (height - 15 - (v / Math.max(sumIn, 1)) * (height - 25)).toFixed(1);
  for (const [i, cls] of [[1, "series-in"], [2, "series"]]) {
    const poly = document.createElementNS(ns, "polyline");
    poly.setAttribute("points", rows.map((r) => `${x(r[0])},${y(r[i])}`).join(" ")); poly.setAttribute("class", cls);
    svg.append(poly);
  }
  for (const [v, label] of [[0, "0"], [sumIn, fmt(sumIn)]]) {
    const text = document.createElementNS(ns, "text");
    Object.entries({ x: 0, y: Number(y(v)) + 4, class: "axis" }).forEach(([k, val]) => text.setAttribute(k, val));
    text.textContent = label; svg.append(text);
  }
  const caption = document.createElementNS(ns, "text");
  Object.entries({ x: 35, y: height - 1, class: "axis" }).forEach(([k, v]) => caption.setAttribute(k, v));
  caption.textContent = `tokens since ${when(t0)}: ${fmt(sumKept)} kept (solid) of ${fmt(sumIn)} in (dashed)`;
  svg.append(caption);
  return svg;
}

function renderCamera(view, cam) {
  const figure = el("div", { class: "kept-figure" }, el("img", { id: "cam-snap", alt: `snapshot of ${cam}` }),
                    el("div", { class: "overlay", id: "overlay" }));
  const info = el("div", { class: "kept-info muted small", id: "kept-info" });
  const chart = el("div", { id: "chart" });
  const showAge = el("input", { type: "checkbox", id: "show-age", checked: true });
  const answer = el("pre", { class: "answer-box", id: "answer" });
  const usage = el("div", { class: "muted small", id: "usage" });
  const question = el("input", { id: "question", type: "text", placeholder: "Ask this camera, e.g. Is a person in view?" });
  const windowS = el("select", { id: "window" }, ...[10, 30, 60, 120].map((s) => el("option", { value: s, text: `last ${s} s` })));
  const ask = el("button", { id: "ask", type: "submit", text: "Ask" });
  const inbox = el("div", { class: "inbox", id: "camera-alerts" });
  view.replaceChildren(
    el("div", { class: "toolbar" }, el("a", { href: "#/", text: "‹ Cameras" }), el("h2", { text: cam })),
    el("div", { class: "camera-page" },
      el("section", {}, el("h3", { text: "What the compressor kept" }), figure,
         el("label", { class: "small" }, showAge, " shade held tokens by age"), info, chart),
      el("section", {}, el("h3", { text: "Ask" }),
         el("form", { class: "ask", onsubmit: (ev) => { ev.preventDefault(); askCamera(cam, question.value, +windowS.value, ask, answer, usage); } },
            question, windowS, ask), answer, usage,
         el("h3", { text: "Alerts" }), inbox)));
  showAge.addEventListener("change", () => figure.classList.toggle("no-age", !showAge.checked));

  let lastFrame = null;
  async function refresh() {
    const k = await json(`/v1/cameras/${enc(cam)}/kept?minutes=5`);
    if (k.frame === lastFrame) return;
    lastFrame = k.frame;
    const [h, w] = k.grid;
    const img = $("#cam-snap");
    const next = new Image();
    next.onload = () => { img.src = next.src; };
    next.src = k.snapshot ? k.snapshot.url : "";
    const overlay = $("#overlay");
    overlay.style.gridTemplateColumns = `repeat(${w}, 1fr)`;
    overlay.style.gridTemplateRows = `repeat(${h}, 1fr)`;
    overlay.dataset.frame = String(k.frame);
    const kept = new Set(k.kept);
    const cells = [];
    for (let p = 0; p < h * w; p++) {
      const age = k.age_s[p];
      const c = el("div", { class: kept.has(p) ? "cell kept" : "cell held", "data-pos": String(p),
                            title: kept.has(p) ? `position ${p}: kept at this frame` :
                                   (age === null ? `position ${p}: never kept in the window` : `position ${p}: held, kept ${age.toFixed(1)} s ago`) });
      if (!kept.has(p)) c.style.setProperty("--age", String(age === null ? 1 : Math.min(1, age / 10)));
      cells.push(c);
    }
    overlay.replaceChildren(...cells);
    const total = k.history.reduce((a, r) => a + r[2], 0), keptAll = k.history.reduce((a, r) => a + r[1], 0);
    info.textContent = `frame ${k.frame} (${when(k.ts)})${k.keyframe ? ", a keyframe" : ""}: kept ${k.kept.length} of ${h * w} ` +
      `positions (green); the rest are held from earlier frames (darker: older). Last 5 min: ${k.history.length} processed frames, ` +
      `${keptAll} of ${total} tokens kept (${pct(total ? keptAll / total : null)}).`;
    chart.replaceChildren(keepChart(k.history), tokensChart(k.history));
  }
  const drawAlerts = () => {
    const mine = alerts.list.filter((a) => a.camera === cam).slice(0, 20);
    inbox.replaceChildren(...(mine.length ? mine.map(alertCard) : [el("p", { class: "muted", text: "No alerts from this camera yet." })]));
  };
  alerts.listeners.add(drawAlerts); drawAlerts();
  refresh().catch(showError);
  const timer = setInterval(() => refresh().catch(showError), SNAPSHOT_EVERY_MS);
  return () => { clearInterval(timer); alerts.listeners.delete(drawAlerts); };
}

async function askCamera(cam, q, windowS, button, out, usage) {
  if (!q.trim()) return;
  button.disabled = true; out.textContent = ""; usage.textContent = "asking…"; out.dataset.done = "";
  try {
    const models = await json("/v1/models");
    const res = await api("/v1/chat/completions", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ model: models.data[0].id, stream: true, stream_options: { include_usage: true },
        messages: [{ role: "user", content: [{ type: "video_url", video_url: { url: `camera://${cam}?window_s=${windowS}` } },
                                             { type: "text", text: q }] }] }) });
    if (!res.ok) { const b = await res.json().catch(() => ({})); throw new Error((b.error && b.error.message) || res.statusText); }
    const reader = res.body.getReader(); const dec = new TextDecoder(); let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let cut;
      while ((cut = buf.indexOf("\n\n")) >= 0) {
        const event = buf.slice(0, cut); buf = buf.slice(cut + 2);
        for (const line of event.split("\n")) {
          if (!line.startsWith("data: ")) continue;
          const data = line.slice(6);
          if (data === "[DONE]") continue;
          const chunk = JSON.parse(data);
          if (chunk.error) throw new Error(chunk.error.message);
          for (const ch of chunk.choices || []) if (ch.delta && ch.delta.content) out.textContent += ch.delta.content;
          if (chunk.usage) {
            const u = chunk.usage, v = u.visual_tokens, full = u.visual_tokens_uncompressed;
            usage.dataset.visual = String(v); usage.dataset.uncompressed = String(full);
            usage.textContent = `visual tokens: ${v} of ${full} uncompressed (${pct(full ? v / full : null)}) · ` +
                                `${u.prompt_tokens} prompt + ${u.completion_tokens} answer tokens`;
          }
        }
      }
    }
    out.dataset.done = "1";
    if (usage.textContent === "asking…") usage.textContent = "";
  } catch (e) {
    usage.textContent = ""; out.textContent = `error: ${e.message}`; out.dataset.done = "error";
  } finally { button.disabled = false; }
}

// ---- the alert inbox ----------------------------------------------------------------------------------
function renderAlerts(view, params) {
  const camera = el("select", { id: "alert-camera" }, el("option", { value: "", text: "every camera" }));
  const openOnly = el("input", { type: "checkbox", id: "open-only" });
  const list = el("div", { class: "inbox", id: "inbox" });
  view.replaceChildren(el("div", { class: "toolbar" }, el("h2", { text: "Alerts" }), camera,
                          el("label", {}, openOnly, " unacknowledged only")), list);
  let chosen = params.get("camera") || "";  // the link's camera until the operator picks another (or every one)
  const draw = () => {
    const cams = [...new Set(alerts.list.map((a) => a.camera))].sort();
    camera.replaceChildren(el("option", { value: "", text: "every camera" }), ...cams.map((c) => el("option", { value: c, text: c, selected: c === chosen })));
    const shown = alerts.list.filter((a) => (!chosen || a.camera === chosen) && (!openOnly.checked || (a.state === "raised" && !alerts.acked[a.id])));
    list.replaceChildren(...(shown.length ? shown.map(alertCard) : [el("p", { class: "muted", text: "No alerts yet." })]));
  };
  camera.addEventListener("change", () => { chosen = camera.value; draw(); }); openOnly.addEventListener("change", draw);
  alerts.listeners.add(draw); draw();
  return () => alerts.listeners.delete(draw);
}

// ---- routing ----------------------------------------------------------------------------------------
let leave = null;
function showError(e) {
  if (e && e.message === "signed out") return;
  let bar = $("#error");
  if (!bar) { bar = el("div", { id: "error", class: "error" }); document.body.append(bar); }
  bar.textContent = String(e && e.message || e); bar.hidden = false;
  clearTimeout(bar._t); bar._t = setTimeout(() => { bar.hidden = true; }, 6000);
}
function route() {
  if (leave) leave();
  const [path, query] = (location.hash.slice(1) || "/").split("?");
  const params = new URLSearchParams(query || "");
  const view = $("#view");
  document.querySelectorAll("nav a").forEach((a) => a.classList.remove("here"));
  if (path.startsWith("/camera/")) { leave = renderCamera(view, decodeURIComponent(path.slice(8))); }
  else if (path === "/alerts") { $("#nav-alerts").classList.add("here"); leave = renderAlerts(view, params); }
  else { $("#nav-wall").classList.add("here"); leave = renderWall(view, params); }
}
document.addEventListener("DOMContentLoaded", () => {
  $("#logout").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    await api("/ui/logout", { method: "POST" }).catch(() => null);
    location.href = "/ui/login";
  });
  window.addEventListener("hashchange", route);
  startAlerts();
  route();
});
