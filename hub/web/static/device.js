// A device's own page (/devices/{id}): its last known state (also after a hub restart:
// "offline since ...", health "as of ..."), every sensor charted over a chosen window from the
// hub's downsampled series (gaps drawn as gaps, zoom by drag, a CSV of the same window), health
// history, commands with their replies, its events; live updates over MQTT appended to the
// charts. Everything a device sent is validated and shown with textContent only.
"use strict";

const ROLE_RANK = { viewer: 0, operator: 1, admin: 2 };
const MAX_SENSORS = 16;
const MAX_LIVE_POINTS = 5000; // per sensor, appended live before the window is fetched again
const HEALTH_ORDER = ["fw", "board", "reset", "up", "heap", "rssi", "reconnects", "queue",
  "dropped", "boot", "seq", "error"];
const HEALTH_CHARTS = [["heap", "B"], ["rssi", "dBm"], ["reconnects", ""], ["queue", ""]];

const { el } = hub;
const $ = (selector) => document.querySelector(selector);

function deviceId() {
  const match = /^\/devices\/([^/]+)\/?$/.exec(location.pathname);
  if (match) return decodeURIComponent(match[1]);
  return new URLSearchParams(location.search).get("id") || "";
}

const state = {
  id: deviceId(),
  role: "viewer",
  device: null, // the validated DEVICE from the hub
  since: 0,
  until: 0,
  live: true, // a window ending now: live readings are appended
  bucket: 0,
  series: new Map(), // sensor -> {t, mean, min, max} with gaps as nulls (what the chart shows)
  holders: new Map(), // sensor -> the chart's element
  renderQueued: false,
  loadSeq: 0,
};
window.deviceState = state; // for tests: the chart data the page holds

const path = (tail = "") => `/api/devices/${encodeURIComponent(state.id)}${tail}`;

function showError(text) {
  $("#page-error").hidden = !text;
  $("#page-error").textContent = text || "";
}

function setLink(text, ok) {
  $("#link").textContent = text;
  $("#link").className = `badge ${ok ? "online" : "offline"}`;
}

function units() {
  const h = state.device && state.device.health;
  return (h && h.units) || {};
}

// --- the device's last known state --------------------------------------------------------------
function cleanDevice(raw) {
  if (!hub.isObject(raw)) return null;
  const sensors = new Map();
  if (hub.isObject(raw.sensors)) {
    for (const [name, r] of Object.entries(raw.sensors).slice(0, MAX_SENSORS)) {
      const value = hub.isObject(r) ? hub.number(r.value) : null;
      if (value !== null) sensors.set(hub.text(name, 64), { value, at: hub.number(r.at) });
    }
  }
  return {
    status: hub.cleanStatus(raw.status),
    status_at: hub.number(raw.status_at),
    last_seen: hub.number(raw.last_seen) ?? hub.number(raw.last_seen_at),
    health: hub.cleanHealth(raw.health),
    health_at: hub.number(raw.health_at),
    fw: hub.text(raw.fw, 64),
    board: hub.text(raw.board, 64),
    boot: hub.text(raw.boot, 16),
    tls_policy: hub.text(raw.tls_policy, 32),
    enabled: typeof raw.enabled === "boolean" ? raw.enabled : null,
    alarms: hub.integer(raw.alarms) || 0,
    sensors,
  };
}

async function loadDevice() {
  let raw;
  try {
    raw = await hub.api(path());
  } catch (err) {
    if (err.status !== 404 && err.status !== 405) throw err;
    // A hub without GET /api/devices/{id}: the device from the list (null if unknown).
    const list = await hub.api("/api/devices");
    raw = (Array.isArray(list) ? list : []).find((d) => hub.isObject(d) && d.id === state.id);
    if (!raw) {
      showError(`no device ${state.id} on this hub`);
      return;
    }
  }
  state.device = cleanDevice(raw);
  renderSummary();
  renderHealth();
}

function renderSummary() {
  const dev = state.device;
  if (!dev) return;
  const status = dev.status || "never seen";
  $("#status").textContent = status;
  $("#status").className = `badge status ${["online", "offline", "asleep"].includes(status) ? status : "unknown"}`;
  const since = dev.status_at ? ` since ${hub.when(dev.status_at)}` : "";
  $("#status-detail").textContent = dev.status
    ? `${status}${since} · last seen ${dev.last_seen ? `${hub.when(dev.last_seen)} (${hub.ago(dev.last_seen)})` : "never"}`
    : "never seen by this hub";
  $("#latest").textContent = [...dev.sensors.entries()]
    .map(([s, r]) => `${s} ${r.value}${units()[s] ? ` ${units()[s]}` : ""}`).join("   ");
  const facts = [
    ["board", dev.board || (dev.health && dev.health.board)],
    ["firmware", dev.fw || (dev.health && dev.health.fw)],
    ["boot", dev.boot],
    ["TLS", dev.tls_policy],
    ["enabled", dev.enabled === null ? null : dev.enabled ? "yes" : "no"],
    ["active alarms", String(dev.alarms)],
  ];
  $("#facts").replaceChildren(...facts.flatMap(([key, value]) => [
    el("dt", { text: key }), el("dd", { dataset: { field: key }, text: value || "—" }),
  ]));
}

function renderHealth() {
  const dev = state.device;
  const h = (dev && dev.health) || {};
  $("#health-at").textContent = dev && dev.health_at ? `as of ${hub.when(dev.health_at)}` : "";
  $("#health").replaceChildren(...HEALTH_ORDER.flatMap((key) => [
    el("dt", { text: key }),
    el("dd", { dataset: { field: key }, text: h[key] === null || h[key] === undefined ? "—" : h[key] }),
  ]));
}

// --- the window, the series and their charts ------------------------------------------------------
function toLocalInput(seconds) {
  const d = new Date(seconds * 1000 - new Date().getTimezoneOffset() * 60000);
  return d.toISOString().slice(0, 19);
}

function fromLocalInput(value) {
  const ms = new Date(value).getTime(); // datetime-local without a zone: local time
  return Number.isFinite(ms) ? ms / 1000 : null;
}

function setWindow() {
  const choice = $("#range").value;
  if (choice === "custom") {
    const since = fromLocalInput($("#since").value);
    const until = fromLocalInput($("#until").value);
    if (since === null || until === null || until <= since) {
      showError("choose a custom window: from before to");
      return false;
    }
    Object.assign(state, { since, until, live: false });
  } else {
    // A window ending now reaches a little past it: the page's clock and the hub's differ a bit.
    const until = hub.now() + 2;
    Object.assign(state, { since: until - 2 - Number(choice), until, live: true });
    $("#since").value = toLocalInput(state.since);
    $("#until").value = toLocalInput(state.until);
  }
  const params = new URLSearchParams({ since: state.since.toFixed(3), until: state.until.toFixed(3) });
  $("#csv").setAttribute("href", hub.safeHref(`${path("/telemetry.csv")}?${params}`));
  return true;
}

// A hub without /series: the raw readings of the window from /telemetry, as series.
async function seriesFromTelemetry(params) {
  const rows = await hub.api(`${path("/telemetry")}?since=${params.get("since")}&until=${params.get("until")}&limit=10000`);
  const series = {};
  for (const r of Array.isArray(rows) ? rows : []) {
    if (!hub.isObject(r) || hub.number(r.value) === null || hub.number(r.received_at) === null) continue;
    const s = (series[hub.text(r.sensor, 64) || "?"] ||= { t: [], mean: [], min: [], max: [], n: [] });
    s.t.push(r.received_at);
    for (const k of ["mean", "min", "max"]) s[k].push(r.value);
    s.n.push(1);
  }
  return { since: state.since, until: state.until, bucket_s: 0, series };
}

async function loadSeries() {
  const seq = ++state.loadSeq;
  const params = new URLSearchParams({
    since: state.since.toFixed(3), until: state.until.toFixed(3), points: "2000",
  });
  let answer;
  try {
    answer = await hub.api(`${path("/series")}?${params}`);
  } catch (err) {
    if (err.status !== 404) {
      showError(`readings: ${err.message}`);
      return;
    }
    answer = await seriesFromTelemetry(params);
  }
  if (seq !== state.loadSeq || !hub.isObject(answer)) return;
  state.bucket = hub.number(answer.bucket_s) || 0;
  const raw = hub.isObject(answer.series) ? answer.series : {};
  state.series.clear();
  for (const name of Object.keys(raw).sort().slice(0, MAX_SENSORS)) {
    const cols = charts.clean(raw[name], ["mean", "min", "max"]);
    if (cols && cols.t.length) state.series.set(hub.text(name, 64), charts.withGaps(cols, state.bucket));
  }
  $("#range-info").textContent = `${hub.when(state.since)} – ${hub.when(state.until)}`
    + (state.bucket ? ` · ${state.bucket} s buckets: mean, with min and max` : " · every reading");
  drawAll();
}

function chartData(cols) {
  return state.bucket ? [cols.t, cols.mean, cols.max, cols.min] : [cols.t, cols.mean];
}

function zoom(since, until) {
  $("#range").value = "custom";
  $("#since").value = toLocalInput(since);
  $("#until").value = toLocalInput(until);
  if (setWindow()) loadSeries();
}

function drawAll() {
  const box = $("#charts");
  for (const [name, holder] of state.holders) {
    if (!state.series.has(name)) {
      if (holder.plot) holder.plot.destroy();
      holder.parentElement.remove();
      state.holders.delete(name);
    }
  }
  let i = 0;
  for (const [name, cols] of state.series) {
    let holder = state.holders.get(name);
    if (!holder) {
      holder = el("div", { className: "chart", dataset: { sensor: name } });
      box.append(el("div", { className: "sensor-chart", dataset: { sensor: name } },
        el("h3", { text: name }), holder));
      state.holders.set(name, holder);
    }
    charts.draw(holder, {
      label: name, unit: units()[name], data: chartData(cols), banded: state.bucket > 0,
      colour: i++, span: state.until - state.since, onZoom: zoom,
    });
  }
  $("#no-readings").hidden = state.series.size > 0;
}

// Live readings, while the window ends now: appended, drawn at most once per frame.
function appendReading(sensor, value) {
  const t = hub.now();
  let cols = state.series.get(sensor);
  if (!cols) {
    if (state.series.size >= MAX_SENSORS) return;
    cols = { t: [], mean: [], min: [], max: [] };
    state.series.set(sensor, cols);
    state.holders.delete(sensor);
    state.renderAll = true;
  }
  // A live reading after a silence longer than about two buckets starts a new line.
  const last = cols.t.length ? cols.t[cols.t.length - 1] : null;
  const step = state.bucket || charts.medianStep(cols.t.filter((_, i) => cols.mean[i] !== null));
  if (last !== null && step > 0 && t - last > 2.5 * step) {
    for (const k of Object.keys(cols)) cols[k].push(k === "t" ? last + step : null);
  }
  for (const [k, v] of [["t", t], ["mean", value], ["min", value], ["max", value]]) cols[k].push(v);
  if (cols.t.length > MAX_LIVE_POINTS) for (const k of Object.keys(cols)) cols[k].shift();
  state.until = t;
  if (state.renderQueued) return;
  state.renderQueued = true;
  requestAnimationFrame(() => {
    state.renderQueued = false;
    if (state.renderAll) {
      state.renderAll = false;
      drawAll();
      return;
    }
    for (const [name, c] of state.series) {
      const holder = state.holders.get(name);
      if (holder && holder.plot) charts.update(holder, chartData(c));
    }
  });
}

// --- health history ---------------------------------------------------------------------------------
async function loadHealthHistory() {
  const params = new URLSearchParams({
    since: state.since.toFixed(3), until: state.until.toFixed(3), points: "500",
  });
  let answer;
  try {
    answer = await hub.api(`${path("/health")}?${params}`);
  } catch (err) {
    $("#health-charts").replaceChildren(el("p", { className: "muted", text: `health history: ${err.message}` }));
    return;
  }
  const cols = charts.clean(answer, HEALTH_CHARTS.map(([k]) => k));
  const box = $("#health-charts");
  for (const old of box.querySelectorAll(".chart")) if (old.plot) old.plot.destroy();
  box.replaceChildren();
  if (!cols || !cols.t.length) {
    box.append(el("p", { className: "muted", text: "No health messages in this window." }));
    return;
  }
  const gapped = charts.withGaps(cols, 0);
  HEALTH_CHARTS.forEach(([key, unit], i) => {
    if (!gapped[key].some((v) => v !== null)) return;
    const holder = el("div", { className: "chart", dataset: { health: key } });
    box.append(el("div", { className: "health-chart" }, el("h3", { text: key }), holder));
    charts.draw(holder, {
      label: key, unit, data: [gapped.t, gapped[key]], banded: false, colour: i,
      span: state.until - state.since, height: 140,
    });
  });
}

// --- commands and events -------------------------------------------------------------------------
async function loadHistory() {
  let answer;
  try {
    answer = await hub.api(`${path("/history")}?limit=100`);
  } catch (err) {
    $("#commands").replaceChildren(el("li", { className: "muted", text: `history: ${err.message}` }));
    return;
  }
  const list = (key) => (hub.isObject(answer) && Array.isArray(answer[key]) ? answer[key] : [])
    .filter(hub.isObject).slice(0, 100);
  $("#commands").replaceChildren(...list("commands").map(commands.historyRow));
  $("#device-events").replaceChildren(...list("events").map((e) => {
    const extra = Object.entries(e).filter(([k]) => !["time", "event"].includes(k)).slice(0, 8)
      .map(([k, v]) => `${hub.text(k, 32)}=${typeof v === "string" ? hub.text(v) : hub.text(JSON.stringify(v))}`);
    return el("li", { dataset: { event: hub.text(e.event, 40) || "" } },
      el("span", { className: "muted", text: `${hub.when(e.time)} ` }),
      el("b", { text: hub.text(e.event, 40) || "?" }),
      extra.length ? el("span", { className: "detail", text: ` ${extra.join(" ")}` }) : null);
  }));
}

async function loadDeviceAlarms() {
  try {
    const list = await hub.api("/api/alarms?state=active");
    const mine = (Array.isArray(list) ? list : []).filter((a) => hub.isObject(a) && a.device === state.id);
    $("#device-alarms").replaceChildren(...mine.map((a) => el("li", { className: "bad" },
      `alarm: ${hub.text(a.rule_name, 64) || hub.text(a.kind, 32) || "?"} since ${hub.when(a.raised_at)}`)));
  } catch (err) {
    $("#device-alarms").replaceChildren();
  }
}

// --- MQTT: this device's topics only ------------------------------------------------------------------
function deviceFilter(template) {
  return template.split("/").map((level) => (level === "{device}" ? state.id
    : /^\{\w+\}$/.test(level) ? "+" : level)).join("/");
}

// A retained message says what the device said at some earlier time: it changes the state shown
// but not the hub's times of it ("since", "as of").
function onMessage(matchers, topic, message, retained) {
  const text = new TextDecoder().decode(message);
  const dev = state.device;
  let match;
  if ((match = matchers.telemetry(topic))) {
    const parts = text.split(",");
    const value = parts.length === 3 && parts[2].trim() !== "" ? Number(parts[2]) : NaN;
    if (!Number.isFinite(value) || match.device !== state.id) return;
    const name = hub.text(match.sensor, 64);
    if (dev) {
      if (dev.sensors.has(name) || dev.sensors.size < MAX_SENSORS) dev.sensors.set(name, { value, at: hub.now() });
      dev.last_seen = hub.now();
    }
    if (state.live) appendReading(name, value);
  } else if ((match = matchers.status(topic)) && dev) {
    if (!text) return;
    // The hub's device state is at least as new as a retained message: it wins.
    if (retained && dev.status) return;
    const status = hub.cleanStatus(text) || "unknown";
    dev.status = status;
    if (!retained) {
      dev.status_at = hub.now();
      dev.last_seen = hub.now();
    }
  } else if ((match = matchers.health(topic)) && dev) {
    const health = hub.cleanHealth(hub.parseJson(text));
    if (!health || (retained && dev.health)) return;
    dev.health = health;
    if (!retained) {
      dev.health_at = hub.now();
      dev.last_seen = hub.now();
    }
    renderHealth();
  } else if ((match = matchers.reply(topic))) {
    commands.onReply(text);
    return;
  } else {
    return;
  }
  if (!state.summaryQueued) {
    state.summaryQueued = true;
    requestAnimationFrame(() => {
      state.summaryQueued = false;
      renderSummary();
    });
  }
}

function connect(info) {
  const topics = hub.isObject(info.topics) ? info.topics : {};
  const kinds = ["telemetry", "status", "health", "reply"];
  if (kinds.some((k) => typeof topics[k] !== "string")) {
    setLink("the hub sent no topic templates", false);
    return;
  }
  const matchers = Object.fromEntries(kinds.map((k) => [k, hub.topicMatcher(topics[k])]));
  const filters = kinds.map((k) => deviceFilter(topics[k]));
  const client = mqtt.connect(hub.wsUrl(info), hub.mqttOptions({
    reconnectPeriod: 2000,
    reconnectOnConnackError: true,
    connectTimeout: 10000,
    username: typeof info.username === "string" ? info.username : "token",
    password: info.token,
  }));
  client.on("connect", () => {
    setLink("connected", true);
    // "live" once the hub has granted the subscriptions: from then on nothing is missed.
    client.subscribe(filters, { qos: 0 }, (err, granted) => {
      const refused = (granted || []).filter((g) => g.qos === 128);
      setLink(err || refused.length ? "live (some topics refused)" : "live", true);
    });
  });
  client.on("error", (err) => {
    setLink(err.code === 4 || err.code === 5 ? "refused: bad or expired token" : `error: ${err.message}`, false);
    if (err.code === 4 || err.code === 5) hub.renewNow();
  });
  client.on("close", () => {
    if ($("#link").textContent.startsWith("live") || $("#link").textContent === "connected") {
      setLink("disconnected", false);
    }
  });
  client.on("message", (topic, message, packet) => {
    onMessage(matchers, topic, message, packet.retain === true);
  });
  hub.onToken((fresh) => {
    client.options.password = fresh.token;
  });
}

// --- controls ------------------------------------------------------------------------------------------
function reloadWindow() {
  showError("");
  if (!setWindow()) return;
  loadSeries();
  loadHealthHistory();
}

$("#range").addEventListener("change", () => {
  if ($("#range").value !== "custom") reloadWindow();
});
$("#range-form").addEventListener("submit", (event) => {
  event.preventDefault();
  if ($("#range").value !== "custom" && ($("#since").value || $("#until").value)) {
    $("#range").value = "custom";
  }
  reloadWindow();
});
for (const input of ["#since", "#until"]) {
  $(input).addEventListener("change", () => {
    $("#range").value = "custom";
  });
}

(async function start() {
  document.title = `IoT hub · ${state.id}`;
  $("#device-title").textContent = state.id;
  let session;
  let info;
  try {
    ({ session, info } = await hub.start());
  } catch (err) {
    setLink(`cannot start: ${err.message}`, false);
    return;
  }
  state.role = (session && session.role) || info.role || "viewer";
  hub.showUser(session);
  commands.init(state.id, state.role, loadHistory);
  desiredPanel.init(state.id, state.role);
  try {
    await loadDevice();
  } catch (err) {
    showError(`${state.id}: ${err.message}`);
  }
  setWindow();
  connect(info);
  await Promise.all([loadSeries(), loadHealthHistory(), loadHistory(), loadDeviceAlarms()]);
  setInterval(() => {
    if (document.hidden) return;
    renderSummary(); // "... ago" stays honest
    loadHistory();
    loadDeviceAlarms();
  }, 15000);
})();
