// The fleet dashboard: device list and health from the HTTP API, live updates over the
// MQTT-over-WebSocket network (MQTT.js), per-device charts (uPlot) backfilled from history,
// commands through the HTTP API, and hub events for admin tokens.
"use strict";

const MAX_POINTS = 600;
const TOKEN_KEY = "hub.token";
const state = {
  devices: new Map(), // id -> {status, health, tls_policy, last_seen_at, latest: Map(sensor -> reading)}
  selected: null,
  token: null,
  stored: false, // a token the user pasted (kept in localStorage) rather than the page's own
  claims: null,
  client: null,
  rows: [], // the selected device's readings: {t, sensor, value, seq}
  chart: null,
  info: null,
};

const $ = (selector) => document.querySelector(selector);

function claimsOf(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part + "=".repeat((4 - (part.length % 4)) % 4)));
  } catch (err) {
    return null;
  }
}

function device(id) {
  if (!state.devices.has(id)) {
    state.devices.set(id, { status: "unknown", health: null, latest: new Map() });
  }
  return state.devices.get(id);
}

function setLink(text, ok) {
  $("#link").textContent = text;
  $("#link").className = `badge ${ok ? "online" : "offline"}`;
}

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

// --- HTTP API ---------------------------------------------------------------------------------
async function api(path, options = {}) {
  const headers = { ...(options.headers || {}), Authorization: `Bearer ${state.token}` };
  const response = await fetch(path, { ...options, headers });
  const body = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

async function loadDevices() {
  try {
    for (const entry of await api("/api/devices")) {
      const dev = device(entry.id);
      dev.status = entry.status || (entry.online ? "online" : "unknown");
      dev.health = entry.health || dev.health;
      dev.tls_policy = entry.tls_policy;
      dev.last_seen_at = entry.last_seen_at;
    }
  } catch (err) {
    console.warn("could not list devices:", err.message);
  }
  renderFleet();
}

// --- fleet list -------------------------------------------------------------------------------
function ago(seconds) {
  if (!seconds) return "never";
  const s = Math.max(0, Math.round(Date.now() / 1000 - seconds));
  return s < 60 ? `${s} s ago` : s < 3600 ? `${Math.round(s / 60)} min ago` : `${Math.round(s / 3600)} h ago`;
}

function renderFleet() {
  const ids = [...state.devices.keys()].sort();
  $("#empty").hidden = ids.length > 0;
  $("#fleet-count").textContent = ids.length ? `(${ids.length})` : "";
  $("#fleet").innerHTML = ids
    .map((id) => {
      const dev = state.devices.get(id);
      const h = dev.health || {};
      const facts = [
        `seen ${escapeHtml(ago(dev.last_seen_at))}`,
        h.heap != null ? `heap ${h.heap} B` : null,
        h.rssi != null ? `RSSI ${h.rssi} dBm` : null,
        h.reconnects != null ? `reconnects ${h.reconnects}` : null,
        h.queue != null ? `queue ${h.queue}` : null,
        dev.tls_policy ? (dev.tls_policy === "tls-required" ? "TLS" : "plain allowed") : null,
      ].filter(Boolean);
      const latest = [...dev.latest.entries()].map(([s, r]) => `${escapeHtml(s)} ${r.value}`).join(" · ");
      return `<li class="device${id === state.selected ? " selected" : ""}" data-device="${escapeHtml(id)}">
        <div class="row"><span class="name">${escapeHtml(id)}</span>
          <span class="badge status ${escapeHtml(dev.status)}">${escapeHtml(dev.status)}</span></div>
        <div class="facts"><span class="values">${latest}</span>${facts.map((f) => `<span>${f}</span>`).join("")}</div>
      </li>`;
    })
    .join("");
}

// --- the selected device: chart and latest values ----------------------------------------------
function sensorsOf(rows) {
  return [...new Set(rows.map((r) => r.sensor))].sort();
}

function chartData() {
  const sensors = sensorsOf(state.rows);
  const xs = state.rows.map((r) => r.t);
  return [sensors, [xs, ...sensors.map((s) => state.rows.map((r) => (r.sensor === s ? r.value : null)))]];
}

function drawChart() {
  const [sensors, data] = chartData();
  const holder = $("#chart");
  holder.dataset.points = String(state.rows.length);
  const width = Math.max(280, holder.clientWidth || 600);
  const colours = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c"];
  const key = sensors.join(",");
  if (!state.chart || state.chart.key !== key) {
    if (state.chart) state.chart.plot.destroy();
    const opts = {
      width, height: 240,
      series: [{}, ...sensors.map((s, i) => ({ label: s, stroke: colours[i % colours.length], spanGaps: true }))],
      axes: [{}, {}],
    };
    state.chart = { key, plot: new uPlot(opts, data, holder) };
  } else {
    state.chart.plot.setData(data);
  }
  const dev = state.devices.get(state.selected);
  $("#latest").textContent = dev
    ? [...dev.latest.entries()].map(([s, r]) => `${s} ${r.value}`).join("   ")
    : "";
}

async function select(id) {
  state.selected = id;
  state.rows = [];
  $("#detail").hidden = false;
  $("#device-title").textContent = id;
  $("#command-reply").textContent = "";
  renderFleet();
  try {
    const history = await api(`/api/devices/${encodeURIComponent(id)}/telemetry?limit=${MAX_POINTS}`);
    if (state.selected !== id) return;
    const live = state.rows; // readings that arrived while the history was loading
    const newest = history.length ? history[history.length - 1].received_at : 0;
    state.rows = history
      .map((r) => ({ t: r.received_at, sensor: r.sensor, value: r.value, seq: r.seq }))
      .concat(live.filter((r) => r.t > newest));
  } catch (err) {
    $("#command-reply").textContent = `history: ${err.message}`;
  }
  drawChart();
}

// --- MQTT -------------------------------------------------------------------------------------
function onReading(id, sensor, payload) {
  const [boot, seq, value] = payload.split(",");
  const reading = { t: Date.now() / 1000, sensor, value: Number(value), seq: Number(seq), boot };
  const dev = device(id);
  dev.latest.set(sensor, reading);
  dev.last_seen_at = reading.t;
  if (id === state.selected) {
    state.rows.push(reading);
    if (state.rows.length > MAX_POINTS) state.rows.splice(0, state.rows.length - MAX_POINTS);
    drawChart();
  }
}

function onEvent(topic, payload) {
  let body;
  try {
    body = JSON.parse(payload);
  } catch (err) {
    return;
  }
  const severity = topic.split("/").pop();
  const who = body.name || body.client_id || "?";
  const li = document.createElement("li");
  li.className = severity;
  li.textContent = `${new Date(body.time * 1000).toLocaleTimeString()} ${body.event} ${who}` +
    (body.reason ? ` (${body.reason})` : "") + (body.detail ? `: ${body.detail}` : "");
  $("#events").prepend(li);
  while ($("#events").children.length > 200) $("#events").lastChild.remove();
}

function onMessage(topic, message) {
  const text = message.toString();
  if (topic.startsWith("$hub/events/")) return onEvent(topic, text);
  const parts = topic.split("/");
  if (parts[0] !== "d" || parts.length < 3) return;
  const id = parts[1];
  if (parts[2] === "t" && parts.length === 4) onReading(id, parts[3], text);
  else if (parts[2] === "s" && parts.length === 3) device(id).status = text || "unknown";
  else if (parts[2] === "m" && parts.length === 3) {
    try {
      device(id).health = JSON.parse(text);
    } catch (err) {
      /* not JSON: ignore */
    }
  } else return;
  renderFleet();
}

function connect() {
  if (state.client) state.client.end(true);
  const info = state.info;
  const proto = location.protocol === "https:" ? "wss" : "ws";
  const url = `${proto}://${location.hostname}:${info.ws_port}${info.ws_path}`;
  const client = mqtt.connect(url, {
    protocolVersion: 4,
    reconnectPeriod: 2000,
    username: info.username,
    password: state.token,
  });
  state.client = client;
  const admin = Boolean(state.claims && state.claims.adm);
  $("#events-panel").hidden = !admin;
  client.on("connect", () => {
    setLink("live", true);
    const filters = ["d/+/s", "d/+/m", "d/+/t/+"].concat(admin ? ["$hub/events/#"] : []);
    client.subscribe(filters, { qos: 0 });
  });
  client.on("error", (err) => {
    const why = { 4: "refused: bad or expired token", 5: "refused: not authorized" }[err.code];
    setLink(why || `error: ${err.message}`, false);
  });
  client.on("close", () => {
    if ($("#link").textContent === "live") setLink("disconnected", false);
  });
  client.on("reconnect", async () => {
    if (state.stored) return;
    try {
      const fresh = await (await fetch("/api/hub")).json();
      state.token = fresh.token;
      client.options.password = fresh.token;
    } catch (err) {
      console.warn("could not refresh the dashboard token", err);
    }
  });
  client.on("message", onMessage);
}

function useToken(token, stored) {
  state.token = token;
  state.stored = stored;
  state.claims = claimsOf(token);
  const c = state.claims || {};
  const mode = c.adm ? "admin" : (c.pub || []).length ? "operator" : "read-only";
  $("#token-mode").textContent = mode;
  connect();
  loadDevices();
}

// --- forms ------------------------------------------------------------------------------------
$("#fleet").addEventListener("click", (event) => {
  const li = event.target.closest("li[data-device]");
  if (li) select(li.dataset.device);
});

$("#command-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const reply = $("#command-reply");
  reply.className = "reply";
  let extra = {};
  try {
    extra = $("#command-args").value.trim() ? JSON.parse($("#command-args").value) : {};
  } catch (err) {
    reply.className = "reply error";
    reply.textContent = "the extra arguments must be a JSON object";
    return;
  }
  reply.textContent = "sent, waiting for the reply…";
  try {
    const body = JSON.stringify({ ...extra, op: $("#command-op").value });
    const answer = await api(`/api/devices/${encodeURIComponent(state.selected)}/commands`, {
      method: "POST", body, headers: { "Content-Type": "application/json" },
    });
    reply.textContent = JSON.stringify(answer);
    if (!answer.ok) reply.className = "reply error";
  } catch (err) {
    reply.className = "reply error";
    reply.textContent = err.message;
  }
});

$("#token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const token = $("#token-input").value.trim();
  if (!claimsOf(token)) {
    $("#token-mode").textContent = "not a hub token";
    return;
  }
  localStorage.setItem(TOKEN_KEY, token);
  $("#token-input").value = "";
  useToken(token, true);
});

$("#token-clear").addEventListener("click", () => {
  localStorage.removeItem(TOKEN_KEY);
  useToken(state.info.token, false);
});

setInterval(renderFleet, 15000); // keep "seen … ago" honest

(async function start() {
  state.info = await (await fetch("/api/hub")).json();
  const saved = localStorage.getItem(TOKEN_KEY);
  if (saved && claimsOf(saved)) useToken(saved, true);
  else useToken(state.info.token, false);
})();
