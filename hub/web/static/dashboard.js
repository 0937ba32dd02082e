// The fleet dashboard: device list and health from the HTTP API, live updates over the
// MQTT-over-WebSocket network (MQTT.js) with the session's short-lived token, per-device charts
// (uPlot) backfilled from history, commands (operators), hub events (admins). Everything a
// device sends is validated here and shown with textContent: it never becomes markup.
"use strict";

const MAX_POINTS = 600;
const MAX_DEVICES = 10000;
const MAX_REPLIES = 20;
const MAX_EVENTS = 200;
const MAX_SENSORS = 16;
const ROLE_RANK = { viewer: 0, operator: 1, admin: 2 };
const STATUS_CLASSES = new Set(["online", "offline", "asleep"]);
// Health fields by type (README, "Topic contract"); anything else a device sends is ignored.
const HEALTH_TEXT = ["fw", "board", "reset", "boot", "error"];
const HEALTH_INT = ["up", "heap", "rssi", "reconnects", "queue", "dropped", "seq"];
const HEALTH_ORDER = ["fw", "board", "reset", "up", "heap", "rssi", "reconnects", "queue",
  "dropped", "boot", "seq", "error"];

const { el } = hub;
const $ = (selector) => document.querySelector(selector);

const state = {
  devices: new Map(), // id -> {status, health, tls_policy, enabled, registered, last_seen_at, latest, replies}
  selected: null,
  role: "viewer",
  client: null,
  matchers: null, // kind -> topic matcher, from /api/hub's templates
  rows: [], // the selected device's readings: {t, sensor, value, seq}
  chart: null,
  renderQueued: false,
  full: true, // the next frame rebuilds the whole list (devices came or went, or a new selection)
  dirty: new Set(), // otherwise only these devices' rows (and the detail, if selected) change
  rowNodes: new Map(), // id -> its <li> in the fleet list
};

function rank() {
  return ROLE_RANK[state.role] ?? 0;
}

function device(id) {
  if (!state.devices.has(id)) {
    if (state.devices.size >= MAX_DEVICES) return null;
    state.devices.set(id, {
      status: null, health: null, latest: new Map(), replies: [], registered: false,
    });
    state.full = true;
  }
  return state.devices.get(id);
}

function setLink(text, ok) {
  $("#link").textContent = text;
  $("#link").className = `badge ${ok ? "online" : "offline"}`;
}

function showError(text) {
  $("#page-error").hidden = !text;
  $("#page-error").textContent = text || "";
}

// --- validation of what devices send --------------------------------------------------------
function cleanHealth(raw) {
  if (!hub.isObject(raw)) return null;
  const out = {};
  for (const key of HEALTH_TEXT) out[key] = hub.text(raw[key]);
  for (const key of HEALTH_INT) out[key] = hub.integer(raw[key]);
  return out;
}

function cleanStatus(raw) {
  return typeof raw === "string" && raw ? hub.text(raw, 32) : null;
}

function parseReading(payload) {
  const parts = payload.split(",");
  if (parts.length !== 3) return null;
  const value = parts[2].trim() === "" ? NaN : Number(parts[2]);
  const seq = Number(parts[1]);
  if (!Number.isFinite(value) || !Number.isInteger(seq)) return null;
  return { boot: hub.text(parts[0], 8), seq, value };
}

// A reply is shown field by field: strings as they are (as text), other values as JSON.
function replyFields(reply) {
  if (!hub.isObject(reply)) return [["reply", hub.text(String(reply))]];
  return Object.entries(reply).slice(0, 20).map(([key, value]) => [
    hub.text(key, 40),
    typeof value === "string" ? hub.text(value) : hub.text(JSON.stringify(value)),
  ]);
}

function replyNode(reply, tag = "div") {
  return el(tag, { className: "fields" },
    replyFields(reply).map(([key, value]) =>
      el("span", { className: "field" }, el("b", { text: `${key}: ` }), value)));
}

// --- HTTP API ---------------------------------------------------------------------------------
async function loadDevices() {
  let list;
  try {
    list = await hub.api("/api/devices");
  } catch (err) {
    showError(`could not list devices: ${err.message}`);
    return;
  }
  showError("");
  const ids = new Set();
  for (const entry of Array.isArray(list) ? list : []) {
    if (!hub.isObject(entry) || typeof entry.id !== "string") continue;
    const dev = device(entry.id);
    if (!dev) break;
    ids.add(entry.id);
    dev.status = cleanStatus(entry.status) || (entry.online === true ? "online" : dev.status);
    dev.health = cleanHealth(entry.health) || dev.health;
    dev.tls_policy = hub.text(entry.tls_policy, 32);
    dev.enabled = typeof entry.enabled === "boolean" ? entry.enabled : null;
    dev.registered = entry.registered === true;
    dev.last_seen_at = hub.number(entry.last_seen_at) ?? dev.last_seen_at;
  }
  for (const id of [...state.devices.keys()]) {
    if (!ids.has(id)) state.devices.delete(id); // removed from the hub
  }
  if (state.selected && !state.devices.has(state.selected)) {
    state.selected = null;
    $("#detail").hidden = true;
  }
  scheduleRender();
  if (typeof deviceAdmin !== "undefined" && rank() >= ROLE_RANK.admin) {
    deviceAdmin.render(state.devices);
  }
}

// --- rendering, at most once per animation frame, only what changed -----------------------------
// scheduleRender(id): that device changed; scheduleRender(): everything may have.
function scheduleRender(id) {
  if (id === undefined) state.full = true;
  else state.dirty.add(id);
  if (state.renderQueued) return;
  state.renderQueued = true;
  requestAnimationFrame(() => {
    state.renderQueued = false;
    const detail = state.full || state.dirty.has(state.selected);
    renderFleet();
    if (detail) renderDetail();
    state.full = false;
    state.dirty.clear();
  });
}

function ago(seconds) {
  if (!seconds) return "never";
  const s = Math.max(0, Math.round(Date.now() / 1000 - seconds));
  if (s < 60) return `${s} s ago`;
  return s < 3600 ? `${Math.round(s / 60)} min ago` : `${Math.round(s / 3600)} h ago`;
}

function fleetRow(id, dev) {
  const h = dev.health || {};
  const status = dev.status || "unknown";
  const latest = [...dev.latest.entries()].map(([s, r]) => `${s} ${r.value}`).join(" · ");
  const facts = [
    latest ? el("span", { className: "values", text: latest }) : null,
    el("span", { text: `seen ${ago(dev.last_seen_at)}` }),
    h.heap !== null && h.heap !== undefined ? el("span", { text: `heap ${h.heap} B` }) : null,
    h.rssi !== null && h.rssi !== undefined ? el("span", { text: `RSSI ${h.rssi} dBm` }) : null,
    h.reconnects !== null && h.reconnects !== undefined
      ? el("span", { text: `reconnects ${h.reconnects}` }) : null,
    h.queue !== null && h.queue !== undefined ? el("span", { text: `queue ${h.queue}` }) : null,
    h.fw ? el("span", { className: "fw", text: `fw ${h.fw}` }) : null,
    dev.tls_policy
      ? el("span", { text: dev.tls_policy === "tls-required" ? "TLS" : "plain allowed" }) : null,
    dev.enabled === false ? el("span", { className: "bad", text: "disabled" }) : null,
    h.error ? el("span", { className: "bad error-text", text: `error: ${h.error}` }) : null,
  ];
  return el("li", {
    className: `device${id === state.selected ? " selected" : ""}`,
    dataset: { device: id },
    tabIndex: 0,
  },
  el("div", { className: "row" },
    el("span", { className: "name", text: id }),
    el("span", {
      className: `badge status ${STATUS_CLASSES.has(status) ? status : "unknown"}`,
      text: status,
    })),
  el("div", { className: "facts" }, facts));
}

function renderFleet() {
  if (!state.full) {
    for (const id of state.dirty) {
      const old = state.rowNodes.get(id);
      const dev = state.devices.get(id);
      if (!old || !dev) continue;
      const fresh = fleetRow(id, dev);
      old.replaceWith(fresh);
      state.rowNodes.set(id, fresh);
    }
    return;
  }
  const ids = [...state.devices.keys()].sort();
  state.rowNodes = new Map(ids.map((id) => [id, fleetRow(id, state.devices.get(id))]));
  $("#empty").hidden = ids.length > 0;
  $("#fleet-count").textContent = ids.length ? `(${ids.length})` : "";
  $("#fleet").replaceChildren(...state.rowNodes.values());
}

function renderDetail() {
  const dev = state.devices.get(state.selected);
  if (!dev) return;
  $("#latest").textContent = [...dev.latest.entries()].map(([s, r]) => `${s} ${r.value}`).join("   ");
  const h = dev.health || {};
  $("#health").replaceChildren(...HEALTH_ORDER.flatMap((key) => [
    el("dt", { text: key }),
    el("dd", { dataset: { field: key }, text: h[key] === null || h[key] === undefined ? "—" : h[key] }),
  ]));
  $("#replies").replaceChildren(...dev.replies.map((r) => replyNode(r, "li")));
  drawChart();
}

// --- the selected device's chart --------------------------------------------------------------
function chartData() {
  const sensors = [...new Set(state.rows.map((r) => r.sensor))].sort();
  const xs = state.rows.map((r) => r.t);
  const ys = sensors.map((s) => state.rows.map((r) => (r.sensor === s ? r.value : null)));
  return [sensors, [xs, ...ys]];
}

function drawChart() {
  const [sensors, data] = chartData();
  const holder = $("#chart");
  holder.dataset.points = String(state.rows.length);
  const key = sensors.join("\u0000");
  if (!state.chart || state.chart.key !== key) {
    if (state.chart) state.chart.plot.destroy();
    const colours = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c"];
    const opts = {
      width: Math.max(280, holder.clientWidth || 600),
      height: 240,
      series: [{}, ...sensors.map((s, i) => ({
        label: s, stroke: colours[i % colours.length], spanGaps: true,
      }))],
      axes: [{}, {}],
    };
    state.chart = { key, plot: new uPlot(opts, data, holder) };
  } else {
    state.chart.plot.setData(data);
  }
}

async function select(id) {
  state.selected = id;
  state.rows = [];
  $("#detail").hidden = false;
  $("#device-title").textContent = id;
  $("#command-reply").hidden = true;
  $("#csv").setAttribute("href", hub.safeHref(`/api/devices/${encodeURIComponent(id)}/telemetry.csv`));
  scheduleRender();
  try {
    const path = `/api/devices/${encodeURIComponent(id)}/telemetry?limit=${MAX_POINTS}`;
    const history = await hub.api(path);
    if (state.selected !== id) return;
    const live = state.rows; // readings that arrived while the history was loading
    const rows = (Array.isArray(history) ? history : [])
      .filter((r) => hub.isObject(r) && hub.number(r.value) !== null && hub.number(r.received_at) !== null)
      .map((r) => ({ t: r.received_at, sensor: hub.text(r.sensor, 64) || "?", value: r.value, seq: r.seq }));
    const newest = rows.length ? rows[rows.length - 1].t : 0;
    state.rows = rows.concat(live.filter((r) => r.t > newest));
  } catch (err) {
    showError(`history of ${id}: ${err.message}`);
  }
  scheduleRender();
}

// --- MQTT ---------------------------------------------------------------------------------------
function onReading(id, sensor, payload) {
  const reading = parseReading(payload);
  const dev = device(id);
  if (!reading || !dev) return;
  const name = hub.text(sensor, 64);
  if (!dev.latest.has(name) && dev.latest.size >= MAX_SENSORS) return;
  const row = { t: Date.now() / 1000, sensor: name, value: reading.value, seq: reading.seq };
  dev.latest.set(name, row);
  dev.last_seen_at = row.t;
  if (id === state.selected) {
    state.rows.push(row);
    if (state.rows.length > MAX_POINTS) state.rows.splice(0, state.rows.length - MAX_POINTS);
  }
}

function onReply(id, payload) {
  const dev = device(id);
  const reply = hub.parseJson(payload);
  if (!dev || reply === undefined) return;
  dev.replies.unshift(reply);
  dev.replies.length = Math.min(dev.replies.length, MAX_REPLIES);
}

function onEvent(topic, payload) {
  const body = hub.parseJson(payload);
  if (!hub.isObject(body)) return;
  const severity = topic.split("/").pop();
  const time = hub.number(body.time);
  const who = hub.text(body.name, 64) || hub.text(body.client_id, 64) || "?";
  const reason = hub.text(body.reason, 64);
  const detail = hub.text(body.detail);
  const li = el("li", { className: ["info", "warning", "error"].includes(severity) ? severity : "" },
    el("span", { className: "time", text: time ? new Date(time * 1000).toLocaleTimeString() : "" }),
    " ",
    el("span", { className: "event", text: hub.text(body.event, 40) || "?" }),
    " ",
    el("span", { className: "who", text: who }),
    reason ? ` (${reason})` : "",
    detail ? el("span", { className: "detail", text: `: ${detail}` }) : "");
  const list = $("#events");
  list.prepend(li);
  while (list.children.length > MAX_EVENTS) list.lastChild.remove();
}

function onMessage(topic, message) {
  const text = new TextDecoder().decode(message);
  const m = state.matchers;
  let match;
  if ((match = m.events(topic))) return onEvent(topic, text);
  if (!text) {
    // An empty retained message clears the topic (the hub does so for a removed device): it
    // forgets what the device said there and never brings a device into the list.
    match = m.status(topic) || m.health(topic);
    const dev = match && state.devices.get(match.device);
    if (!dev) return;
    if (m.status(topic)) dev.status = null;
    else dev.health = null;
    return scheduleRender(match.device);
  }
  if ((match = m.telemetry(topic))) onReading(match.device, match.sensor, text);
  else if ((match = m.status(topic))) {
    const dev = device(match.device);
    if (dev) dev.status = cleanStatus(text) || "unknown";
  } else if ((match = m.health(topic))) {
    const dev = device(match.device);
    const health = cleanHealth(hub.parseJson(text));
    if (dev && health) dev.health = health;
  } else if ((match = m.reply(topic))) onReply(match.device, text);
  else return;
  scheduleRender(match.device);
}

function connect(info) {
  const topics = hub.isObject(info.topics) ? info.topics : {};
  const kinds = ["telemetry", "status", "health", "reply", "events"];
  const missing = kinds.filter((k) => typeof topics[k] !== "string");
  if (missing.length) {
    setLink(`the hub sent no topic template for ${missing.join(", ")}`, false);
    return;
  }
  state.matchers = Object.fromEntries(kinds.map((k) => [k, hub.topicMatcher(topics[k])]));
  const filters = ["telemetry", "status", "health", "reply"].map((k) => hub.topicFilter(topics[k]));
  if (rank() >= ROLE_RANK.admin) filters.push(topics.events);
  const client = mqtt.connect(hub.wsUrl(info), hub.mqttOptions({
    reconnectPeriod: 2000,
    // MQTT.js stops for good after a refused CONNECT unless told otherwise; the refusal asks
    // for a fresh token (hub.renewNow) and the next attempt uses it.
    reconnectOnConnackError: true,
    connectTimeout: 10000,
    username: typeof info.username === "string" ? info.username : "token",
    password: info.token,
  }));
  state.client = client;
  client.on("connect", () => {
    setLink("live", true);
    client.subscribe(filters, { qos: 0 }, (err, granted) => {
      const refused = (granted || []).filter((g) => g.qos === 128).map((g) => g.topic);
      if (err || refused.length) setLink(`live (refused: ${refused.join(", ")})`, true);
    });
  });
  client.on("error", (err) => {
    const why = { 4: "refused: bad or expired token", 5: "refused: not authorized" }[err.code];
    setLink(why || `error: ${err.message}`, false);
    if (err.code === 4 || err.code === 5) hub.renewNow();
  });
  client.on("close", () => {
    if ($("#link").textContent.startsWith("live")) setLink("disconnected", false);
  });
  client.on("message", onMessage);
  hub.onToken((fresh) => {
    client.options.password = fresh.token;
  });
}

// --- forms ------------------------------------------------------------------------------------
$("#fleet").addEventListener("click", (event) => {
  const li = event.target.closest("li[data-device]");
  if (li) select(li.dataset.device);
});
$("#fleet").addEventListener("keydown", (event) => {
  const li = event.target.closest("li[data-device]");
  if (li && (event.key === "Enter" || event.key === " ")) {
    event.preventDefault();
    select(li.dataset.device);
  }
});

$("#command-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const reply = $("#command-reply");
  reply.hidden = false;
  reply.className = "reply";
  const id = state.selected;
  let extra = {};
  const args = $("#command-args").value.trim();
  if (args) {
    extra = hub.parseJson(args);
    if (!hub.isObject(extra)) {
      reply.className = "reply error";
      reply.textContent = "the extra arguments must be a JSON object";
      return;
    }
  }
  reply.textContent = "sent, waiting for the reply…";
  try {
    const answer = await hub.api(`/api/devices/${encodeURIComponent(id)}/commands`, {
      method: "POST", body: { ...extra, op: $("#command-op").value },
    });
    if (state.selected !== id) return;
    reply.replaceChildren(replyNode(answer));
    if (!hub.isObject(answer) || answer.ok !== true) reply.className = "reply error";
  } catch (err) {
    reply.className = "reply error";
    reply.textContent = err.message;
  }
});

setInterval(scheduleRender, 15000); // keep "seen … ago" honest
setInterval(loadDevices, 60000); // registry changes (and an ended session: a 401 goes to /login)

(async function start() {
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
  // What a role may not use is removed from the page, not merely hidden.
  if (rank() >= ROLE_RANK.operator) $("#command-form").hidden = false;
  else $("#command-form").remove();
  for (const panel of ["#devices-panel", "#users-panel", "#events-panel"]) {
    if (rank() >= ROLE_RANK.admin) $(panel).hidden = false;
    else $(panel).remove();
  }
  if (rank() >= ROLE_RANK.admin) {
    deviceAdmin.init(loadDevices);
    if (session) userAdmin.init(); // accounts are managed from a session, not the public view
  }
  connect(info);
  await loadDevices();
})();
