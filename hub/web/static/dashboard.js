// The fleet console: one page of the fleet at a time from GET /api/fleet (search, filters, sort
// and counts are the hub's, so 10,000 devices cost the page no more than 100), live updates over
// the MQTT-over-WebSocket network applied to the page's rows in memory and drawn at most once per
// animation frame, only the rows that changed; hub events (admins). Each row links to the
// device's own page (/devices/{id}). Everything a device sends is validated here and shown with
// textContent: it never becomes markup.
"use strict";

const PAGE_SIZE = 100;
const MQTT_JS = "/vendor/mqtt.min.js"; // loaded after the first rows are asked for
const MAX_EVENTS = 200;
const MAX_SENSORS = 16;
const REFRESH_MS = 10000; // counts and the page's membership, from the hub
const ROLE_RANK = { viewer: 0, operator: 1, admin: 2 };
const STATUS_CLASSES = new Set(["online", "offline", "asleep"]);
const STATES = ["online", "offline", "asleep", "never", "alarm"];

const { el } = hub;
const $ = (selector) => document.querySelector(selector);

const state = {
  role: "viewer",
  client: null,
  matchers: null, // kind -> topic matcher, from /api/hub's templates
  rows: new Map(), // id -> the page's device (validated), in the hub's order
  nodes: new Map(), // id -> its <li>
  offset: 0,
  total: 0,
  loading: null, // the AbortController of the page being fetched
  renderQueued: false,
  dirty: new Set(), // rows to redraw at the next frame
  fallback: false, // the hub has no /api/fleet: the list is /api/devices, filtered here
  templates: null, // the hub's topic templates the page subscribes to per device
  limits: { filters_per_subscribe: 8, subscriptions: 50 }, // /api/hub's MQTT session quotas
  subscribed: new Set(), // the MQTT filters of the devices on the page
  loaded: false, // a page of the fleet has come
};
// For tests and the console benchmark: what the page holds, without reading the DOM.
window.fleetState = state;

function rank() {
  return ROLE_RANK[state.role] ?? 0;
}

function setLink(text, ok) {
  $("#link").textContent = text;
  $("#link").className = `badge ${ok ? "online" : "offline"}`;
}

function showError(text) {
  $("#page-error").hidden = !text;
  $("#page-error").textContent = text || "";
}

function devicePath(id) {
  return `/devices/${encodeURIComponent(id)}`;
}

// --- validation of what the hub lists (it repeats what devices sent) ---------------------------
function cleanDevice(raw) {
  if (!hub.isObject(raw) || typeof raw.id !== "string" || !raw.id) return null;
  const latest = new Map();
  if (hub.isObject(raw.sensors)) {
    for (const [name, reading] of Object.entries(raw.sensors).slice(0, MAX_SENSORS)) {
      const value = hub.isObject(reading) ? hub.number(reading.value) : null;
      if (value !== null) latest.set(hub.text(name, 64), { value, at: hub.number(reading.at) });
    }
  }
  const health = hub.cleanHealth(raw.health);
  return {
    id: raw.id,
    status: hub.cleanStatus(raw.status) || (raw.online === true ? "online" : null),
    last_seen: hub.number(raw.last_seen) ?? hub.number(raw.last_seen_at),
    health,
    fw: hub.text(raw.fw, 64) || (health && health.fw),
    board: hub.text(raw.board, 64) || (health && health.board),
    tls_policy: hub.text(raw.tls_policy, 32),
    enabled: typeof raw.enabled === "boolean" ? raw.enabled : null,
    registered: raw.registered === true,
    alarms: hub.integer(raw.alarms) || 0,
    latest,
  };
}

// --- the page of the fleet, from the hub --------------------------------------------------------
function query() {
  return {
    q: $("#fleet-q").value.trim(),
    state: $("#fleet-state").value,
    board: $("#fleet-board").value,
    tls: $("#fleet-tls").value,
    fw: $("#fleet-fw").value,
    sort: $("#fleet-sort").value,
  };
}

function fillMenu(select, values, label) {
  const chosen = select.value;
  const clean = [...new Set((Array.isArray(values) ? values : [])
    .map((v) => hub.text(v, 64)).filter(Boolean))].sort().slice(0, 200);
  if (chosen && !clean.includes(chosen)) clean.push(chosen);
  select.replaceChildren(el("option", { value: "", text: label }),
    ...clean.map((v) => el("option", { value: v, text: v, selected: v === chosen })));
}

// Until the hub answers GET /api/fleet: the same answer made here from GET /api/devices.
function emulateFleet(list, q, offset) {
  const all = (Array.isArray(list) ? list : []).map(cleanDevice).filter((d) => d && d.registered);
  const stateOf = (d) => (d.status === null ? "never" : d.status);
  const counts = { all: all.length, alarm: 0, online: 0, offline: 0, asleep: 0, never: 0 };
  for (const d of all) {
    counts[stateOf(d)] = (counts[stateOf(d)] || 0) + 1;
    if (d.alarms) counts.alarm += 1;
  }
  let rows = all.filter((d) => (!q.q || d.id.includes(q.q))
    && (!q.state || (q.state === "alarm" ? d.alarms > 0 : stateOf(d) === q.state))
    && (!q.board || d.board === q.board) && (!q.tls || d.tls_policy === q.tls)
    && (!q.fw || d.fw === q.fw));
  const seen = (d) => d.last_seen || 0;
  if (q.sort === "-last_seen") rows.sort((a, b) => seen(b) - seen(a) || (a.id < b.id ? -1 : 1));
  else if (q.sort === "last_seen") rows.sort((a, b) => seen(a) - seen(b) || (a.id < b.id ? -1 : 1));
  else rows.sort((a, b) => (a.id < b.id ? -1 : 1));
  const total = rows.length;
  rows = rows.slice(offset, offset + PAGE_SIZE);
  return {
    total, offset, limit: PAGE_SIZE, counts,
    boards: all.map((d) => d.board), firmware: all.map((d) => d.fw), devices: rows, clean: true,
  };
}

async function loadPage() {
  const q = query();
  const params = new URLSearchParams({ offset: String(state.offset), limit: String(PAGE_SIZE) });
  for (const [key, value] of Object.entries(q)) if (value) params.set(key, value);
  if (state.loading) state.loading.abort();
  const mine = new AbortController();
  state.loading = mine;
  let answer;
  hub.mark("fleet-request");
  try {
    if (!state.fallback) {
      try {
        answer = await hub.api(`/api/fleet?${params}`);
      } catch (err) {
        if (err.status !== 404) throw err;
        state.fallback = true;
      }
    }
    if (state.fallback) answer = emulateFleet(await hub.api("/api/devices"), q, state.offset);
  } catch (err) {
    if (state.loading === mine) showError(`could not list the fleet: ${err.message}`);
    return;
  } finally {
    if (state.loading === mine) state.loading = null;
  }
  if (mine.signal.aborted || !hub.isObject(answer)) return;
  hub.mark("fleet-answer");
  showError("");
  accept(answer);
  hub.mark("fleet-rendered");
}

function accept(answer) {
  const devices = Array.isArray(answer.devices) ? answer.devices : [];
  const fresh = new Map();
  for (const raw of devices.slice(0, 500)) {
    const dev = answer.clean ? raw : cleanDevice(raw);
    if (dev) fresh.set(dev.id, dev);
  }
  // Live values already on a row stay if the hub's answer is older (no flicker back).
  for (const [id, dev] of fresh) {
    const old = state.rows.get(id);
    if (old && (old.last_seen || 0) > (dev.last_seen || 0)) {
      for (const [name, reading] of old.latest) dev.latest.set(name, reading);
      dev.last_seen = old.last_seen;
    }
  }
  state.rows = fresh;
  state.loaded = true;
  state.total = hub.integer(answer.total) ?? fresh.size;
  const counts = hub.isObject(answer.counts) ? answer.counts : {};
  for (const key of ["all", ...STATES]) {
    const node = document.querySelector(`#counts [data-count="${key}"]`);
    if (node) node.textContent = String(hub.integer(counts[key]) ?? 0);
  }
  fillMenu($("#fleet-board"), answer.boards, "any board");
  fillMenu($("#fleet-fw"), answer.firmware, "any firmware");
  renderList();
  syncSubscriptions();
  renderRegistry();
}

function renderRegistry() {
  if (typeof deviceAdmin !== "undefined" && rank() >= ROLE_RANK.admin) {
    deviceAdmin.render(new Map([...state.rows].filter(([, d]) => d.registered)));
  }
}

function refilter() {
  state.offset = 0;
  loadPage();
}

// --- rendering: the page's rows; live changes redraw only their own row, once per frame ----------
function scheduleRender(id) {
  state.dirty.add(id);
  if (state.renderQueued) return;
  state.renderQueued = true;
  requestAnimationFrame(() => {
    state.renderQueued = false;
    for (const dirty of state.dirty) {
      const old = state.nodes.get(dirty);
      const dev = state.rows.get(dirty);
      if (!old || !dev) continue;
      const fresh = rowFor(dev, old);
      if (fresh !== old) old.replaceWith(fresh);
      state.nodes.set(dirty, fresh);
    }
    state.dirty.clear();
  });
}

// What a row shows but "seen … ago": a row whose key did not change keeps its node (the
// 10-s refresh of 100 rows then rebuilds only the rows that changed, not all of them).
const rowKeys = new WeakMap(); // <li> -> the rowKey it shows

function rowKey(dev) {
  return JSON.stringify([dev.id, dev.status, dev.last_seen ? 1 : 0,
    [...dev.latest].map(([name, reading]) => [name, reading.value]), dev.health, dev.fw,
    dev.board, dev.tls_policy, dev.enabled, dev.alarms]);
}

function rowFor(dev, old) {
  const key = rowKey(dev);
  if (old && rowKeys.get(old) === key) {
    updateSeen(old, dev);
    return old;
  }
  const node = fleetRow(dev);
  rowKeys.set(node, key);
  return node;
}

function updateSeen(node, dev) {
  const seen = node.querySelector(".seen");
  const text = `seen ${hub.ago(dev.last_seen)}`;
  if (seen && seen.textContent !== text) seen.textContent = text;
}

function fact(value, make) {
  return value === null || value === undefined ? null : make(value);
}

function fleetRow(dev) {
  const h = dev.health || {};
  const status = dev.status || (dev.last_seen ? "unknown" : "never seen");
  const latest = [...dev.latest.entries()].map(([s, r]) => `${s} ${r.value}`).join(" · ");
  const facts = [
    latest ? el("span", { className: "values", text: latest }) : null,
    el("span", { className: "seen", text: `seen ${hub.ago(dev.last_seen)}` }),
    fact(h.heap, (v) => el("span", { text: `heap ${v} B` })),
    fact(h.rssi, (v) => el("span", { text: `RSSI ${v} dBm` })),
    fact(h.reconnects, (v) => el("span", { text: `reconnects ${v}` })),
    fact(h.queue, (v) => el("span", { text: `queue ${v}` })),
    dev.fw ? el("span", { className: "fw", text: `fw ${dev.fw}` }) : null,
    dev.board ? el("span", { className: "board", text: dev.board }) : null,
    dev.tls_policy
      ? el("span", { text: dev.tls_policy === "tls-required" ? "TLS" : "plain allowed" }) : null,
    dev.enabled === false ? el("span", { className: "bad", text: "disabled" }) : null,
    h.error ? el("span", { className: "bad error-text", text: `error: ${h.error}` }) : null,
  ];
  return el("li", {
    className: `device${dev.alarms ? " alarmed" : ""}`,
    dataset: { device: dev.id },
    tabIndex: 0,
  },
  el("div", { className: "row" },
    el("a", { className: "name", href: devicePath(dev.id), text: dev.id }),
    dev.alarms
      ? el("span", { className: "badge alarm", text: `alarm${dev.alarms > 1 ? ` ×${dev.alarms}` : ""}` })
      : null,
    el("span", {
      className: `badge status ${STATUS_CLASSES.has(status) ? status : "unknown"}`,
      text: status,
    })),
  el("div", { className: "facts" }, facts));
}

function renderList() {
  state.dirty.clear();
  const old = state.nodes;
  state.nodes = new Map([...state.rows.values()]
    .map((dev) => [dev.id, rowFor(dev, old.get(dev.id))]));
  hub.syncChildren($("#fleet"), state.nodes.values());
  const last = state.offset + state.rows.size;
  $("#empty").hidden = state.rows.size > 0;
  $("#empty").textContent = state.total === 0 && !Object.values(query()).some((v) => v && v !== "id")
    ? "No devices yet." : "No device matches.";
  $("#fleet-count").textContent = `(${state.total})`;
  $("#page-info").textContent = state.rows.size
    ? `${state.offset + 1}-${last} of ${state.total}` : "";
  $("#page-prev").disabled = state.offset === 0;
  $("#page-next").disabled = last >= state.total;
}

// --- MQTT: applied to the page's rows only, cheaply (no re-sort, no re-fetch) -------------------
function parseReading(payload) {
  const parts = payload.split(",");
  if (parts.length !== 3) return null;
  const value = parts[2].trim() === "" ? NaN : Number(parts[2]);
  if (!Number.isFinite(value) || !Number.isInteger(Number(parts[1]))) return null;
  return value;
}

function onEvent(topic, payload) {
  const body = hub.parseJson(payload);
  if (!hub.isObject(body)) return;
  const severity = topic.split("/").pop();
  const time = hub.number(body.time);
  const who = hub.text(body.name, 64) || hub.text(body.client_id, 64)
    || hub.text(body.device, 64) || "?";
  const reason = hub.text(body.reason, 64);
  const detail = hub.text(body.detail);
  const event = hub.text(body.event, 40) || "?";
  const li = el("li", { className: ["info", "warning", "error"].includes(severity) ? severity : "" },
    el("span", { className: "time", text: time ? new Date(time * 1000).toLocaleTimeString() : "" }),
    " ",
    el("span", { className: "event", text: event }),
    " ",
    el("span", { className: "who", text: who }),
    reason ? ` (${reason})` : "",
    detail ? el("span", { className: "detail", text: `: ${detail}` }) : "");
  const list = $("#events");
  list.prepend(li);
  while (list.children.length > MAX_EVENTS) list.lastChild.remove();
  if (event.startsWith("alarm_") && typeof alarmsPanel !== "undefined") alarmsPanel.reload();
}

function onMessage(topic, message, packet) {
  const m = state.matchers;
  let match = m.telemetry(topic);
  if (match) {
    // The hot path (up to 1,000 messages/s): a device off this page costs one Map look-up.
    const dev = state.rows.get(match.device);
    if (!dev) return;
    const value = parseReading(new TextDecoder().decode(message));
    const name = hub.text(match.sensor, 64);
    if (value === null || (!dev.latest.has(name) && dev.latest.size >= MAX_SENSORS)) return;
    dev.latest.set(name, { value, at: hub.now() });
    dev.last_seen = hub.now();
    scheduleRender(dev.id);
    return;
  }
  if ((match = m.events(topic))) {
    onEvent(topic, new TextDecoder().decode(message));
    return;
  }
  match = m.status(topic) || m.health(topic);
  const dev = match && state.rows.get(match.device);
  if (!dev) return;
  const text = new TextDecoder().decode(message);
  const isStatus = Boolean(m.status(topic));
  // The hub's list is at least as new as a retained message (sent on every subscribe): it wins.
  if (packet && packet.retain && text && (isStatus ? dev.status : dev.health)) return;
  if (isStatus) {
    // An empty retained message clears the topic (the hub does so for a removed device).
    dev.status = text ? hub.cleanStatus(text) || "unknown" : null;
  } else {
    const health = text ? hub.cleanHealth(hub.parseJson(text)) : null;
    if (text && !health) return;
    dev.health = health;
    if (health && health.fw) dev.fw = health.fw;
  }
  if (text) dev.last_seen = hub.now();
  scheduleRender(dev.id);
}

// The page listens to the devices on it only: 100 devices' topics, not the whole fleet's
// (10,000 devices' retained status and health on every subscribe, 1,000 readings/s). A hub
// whose session quota cannot hold them (/api/hub's limits) gets the fleet-wide filters instead,
// and onMessage drops what is not on the page.
function wantedFilters() {
  const perDevice = new Set();
  for (const id of state.rows.keys()) {
    for (const template of state.templates) {
      perDevice.add(template.split("/").map((level) => (level === "{device}" ? id
        : /^\{\w+\}$/.test(level) ? "+" : level)).join("/"));
    }
  }
  const room = state.limits.subscriptions - (rank() >= ROLE_RANK.admin ? 1 : 0);
  if (perDevice.size <= room) return perDevice;
  return new Set(state.templates.map((t) => t.replace(/\{\w+\}/g, "+")));
}

// Sends SUBSCRIBEs of at most the hub's filters-per-SUBSCRIBE quota; calls done(refused) once
// every one is answered.
function subscribeInChunks(client, filters, done) {
  const size = Math.max(1, state.limits.filters_per_subscribe);
  const chunks = [];
  for (let i = 0; i < filters.length; i += size) chunks.push(filters.slice(i, i + size));
  let waiting = chunks.length;
  const refused = [];
  for (const chunk of chunks) {
    client.subscribe(chunk, { qos: 0 }, (err, granted) => {
      if (err) refused.push(...chunk);
      else refused.push(...(granted || []).filter((g) => g.qos === 128).map((g) => g.topic));
      if (--waiting === 0) done(refused);
    });
  }
}

function syncSubscriptions() {
  const client = state.client;
  if (!client || !client.connected || !state.templates) return;
  const wanted = wantedFilters();
  const gone = [...state.subscribed].filter((f) => !wanted.has(f));
  const added = [...wanted].filter((f) => !state.subscribed.has(f));
  if (gone.length) client.unsubscribe(gone);
  // "live" once the hub has granted the page's subscriptions: from then on nothing is missed.
  const live = $("#link").textContent.startsWith("live");
  if (added.length) {
    subscribeInChunks(client, added, (refused) => {
      if (refused.length) {
        setLink(`live (${refused.length} topics refused, e.g. ${refused[0]})`, true);
      } else if (!live && client.connected) {
        setLink("live", true);
      }
      hub.mark("mqtt-subscribed");
    });
  } else if (!live && state.loaded) {
    setLink("live", true);
  }
  state.subscribed = wanted;
}

async function connect(info) {
  const topics = hub.isObject(info.topics) ? info.topics : {};
  const kinds = ["telemetry", "status", "health", "events"];
  const missing = kinds.filter((k) => typeof topics[k] !== "string");
  if (missing.length) {
    setLink(`the hub sent no topic template for ${missing.join(", ")}`, false);
    return;
  }
  state.matchers = Object.fromEntries(kinds.map((k) => [k, hub.topicMatcher(topics[k])]));
  state.templates = ["telemetry", "status", "health"].map((k) => topics[k]);
  const limits = hub.isObject(info.limits) ? info.limits : {};
  for (const key of Object.keys(state.limits)) {
    if (Number.isInteger(limits[key]) && limits[key] > 0) state.limits[key] = limits[key];
  }
  hub.mark("mqtt-connect");
  try {
    await hub.loadScript(MQTT_JS);
  } catch (err) {
    setLink(err.message, false);
    return;
  }
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
    hub.mark("mqtt-connected");
    setLink("connected", true);
    if (rank() >= ROLE_RANK.admin) client.subscribe(topics.events, { qos: 0 });
    state.subscribed = new Set(); // a new session: every filter again
    syncSubscriptions();
  });
  client.on("error", (err) => {
    const why = { 4: "refused: bad or expired token", 5: "refused: not authorized" }[err.code];
    setLink(why || `error: ${err.message}`, false);
    if (err.code === 4 || err.code === 5) hub.renewNow();
  });
  client.on("close", () => {
    if ($("#link").textContent.startsWith("live") || $("#link").textContent === "connected") {
      setLink("disconnected", false);
    }
  });
  client.on("message", onMessage);
  hub.onToken((fresh) => {
    client.options.password = fresh.token;
  });
}

// --- controls -----------------------------------------------------------------------------------
$("#fleet").addEventListener("click", (event) => {
  if (event.target.closest("a")) return; // the link itself
  const li = event.target.closest("li[data-device]");
  if (li) location.assign(devicePath(li.dataset.device));
});
$("#fleet").addEventListener("keydown", (event) => {
  const li = event.target.closest("li[data-device]");
  if (li && event.target === li && (event.key === "Enter" || event.key === " ")) {
    event.preventDefault();
    location.assign(devicePath(li.dataset.device));
  }
});
let searchTimer = null;
$("#fleet-q").addEventListener("input", () => {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(refilter, 250);
});
$("#fleet-filter").addEventListener("submit", (event) => {
  event.preventDefault();
  refilter();
});
for (const id of ["#fleet-state", "#fleet-board", "#fleet-tls", "#fleet-fw", "#fleet-sort"]) {
  $(id).addEventListener("change", refilter);
}
$("#counts").addEventListener("click", (event) => {
  const button = event.target.closest("button[data-state]");
  if (!button) return;
  $("#fleet-state").value = button.dataset.state;
  refilter();
});
$("#page-prev").addEventListener("click", () => {
  state.offset = Math.max(0, state.offset - PAGE_SIZE);
  loadPage();
});
$("#page-next").addEventListener("click", () => {
  state.offset += PAGE_SIZE;
  loadPage();
});

// "seen … ago" stays honest; counts and the page's membership come from the hub now and then.
setInterval(() => {
  requestAnimationFrame(() => {
    for (const [id, node] of state.nodes) {
      const dev = state.rows.get(id);
      if (dev) updateSeen(node, dev);
    }
  });
}, 15000);
setInterval(() => {
  if (!document.hidden && !state.loading) loadPage();
}, REFRESH_MS);

(async function start() {
  let session;
  let info;
  const page = loadPage(); // the first rows need neither the session nor the MQTT token
  try {
    ({ session, info } = await hub.start());
  } catch (err) {
    setLink(`cannot start: ${err.message}`, false);
    return;
  }
  state.role = (session && session.role) || info.role || "viewer";
  hub.showUser(session);
  // What a role may not use is removed from the page, not merely hidden.
  for (const panel of ["#devices-panel", "#users-panel", "#groups-panel", "#events-panel"]) {
    if (rank() >= ROLE_RANK.admin) $(panel).hidden = false;
    else $(panel).remove();
  }
  if (rank() >= ROLE_RANK.admin) {
    deviceAdmin.init(loadPage);
    if (session) userAdmin.init(); // accounts are managed from a session, not the public view
    if (typeof groupsPanel !== "undefined") groupsPanel.init();
  }
  renderRegistry();
  connect(info);
  alarmsPanel.init(state.role, loadPage);
  await page;
})();
