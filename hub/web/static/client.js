// A web MQTT client on the hub's WebSocket network: connect with the session's MQTT token (or
// other credentials typed in), subscribe, watch messages (text, hex or JSON), publish with QoS
// and retain (acknowledgements shown), unsubscribe, clear a retained message. Each connection
// starts with a clean subscription list. Topics and payloads are shown with textContent: they
// never become markup.
"use strict";

const $ = (s) => document.querySelector(s);
const { el } = hub;
const MAX_MESSAGES = 500;
const MAX_PUBLISHES = 50;
const REFUSALS = {
  1: "refused: unacceptable protocol version",
  2: "refused: client id rejected",
  3: "refused: server unavailable",
  4: "refused: bad user name or password (or an expired token)",
  5: "refused: not authorized",
};
let client = null;
let sessionToken = null; // the token in the password field, while it is the session's
let renderQueued = false;
const received = []; // {topic, payload: Uint8Array, qos, retain, time}

function setStatus(text, ok, detail = "") {
  $("#status").textContent = text;
  $("#status").className = `badge ${ok ? "online" : "offline"}`;
  $("#status-detail").textContent = detail;
  $("#status-detail").className = ok || !detail ? "reply" : "reply error";
}

function setConnected(connected) {
  $("#connect").disabled = connected;
  $("#disconnect").disabled = !connected;
  $("#subscribe").disabled = !connected;
  $("#publish").disabled = !connected;
  $("#clear-retained").disabled = !connected;
  for (const button of document.querySelectorAll("#subscriptions button")) button.disabled = !connected;
}

// A device logs in with client id = its device id (= its user name); say so before the hub
// refuses a login that differs.
function updateHint() {
  const user = $("#username").value.trim();
  const clientId = $("#client-id").value.trim();
  const device = user && user !== "token" && !user.startsWith("token");
  const hint = $("#client-id-hint");
  hint.hidden = !(device && clientId !== user);
  hint.textContent = hint.hidden ? ""
    : `A device logs in with client id = its device id: use client id "${user}" for device ${user}.`;
}

function logPublish(text, ok) {
  const list = $("#publishes");
  const li = el("li", { className: ok ? "puback" : "bad", text });
  list.prepend(li);
  while (list.children.length > MAX_PUBLISHES) list.lastChild.remove();
  return li;
}

// One publish, its acknowledgement (PUBACK for QoS 1, PUBCOMP for QoS 2) shown when it comes.
function publish(topic, payload, qos, retain) {
  const what = `${topic}${retain ? " (retained)" : ""}${payload === "" ? " (empty)" : ""}`;
  const li = logPublish(`${what}: sending at QoS ${qos}…`, true);
  li.dataset.topic = topic;
  li.dataset.state = "sending";
  client.publish(topic, payload, { qos, retain }, (err, packet) => {
    if (err) {
      li.className = "bad";
      li.dataset.state = "failed";
      li.textContent = `${what}: not sent (${err.message})`;
      return;
    }
    li.dataset.state = qos === 0 ? "sent" : "acknowledged";
    const id = packet && packet.messageId ? ` #${packet.messageId}` : "";
    li.textContent = qos === 0
      ? `${what}: sent at QoS 0 (no acknowledgement at QoS 0)`
      : `${what}: ${qos === 1 ? "PUBACK" : "PUBCOMP"}${id} from the hub`;
  });
}

function subscriptionRow(filter, code, refused) {
  const li = el("li", {
    dataset: { filter },
    className: refused ? "refused" : null,
  }, el("span", { className: "text", text: refused
    ? `${filter}: refused by the hub (outside this login's topic rules)`
    : `${filter}: granted QoS ${code}` }));
  if (!refused) {
    li.append(" ", el("button", { type: "button", className: "unsubscribe", text: "unsubscribe",
      on: { click: () => unsubscribe(filter, li) } }));
  }
  return li;
}

function unsubscribe(filter, li) {
  if (!client) return;
  const button = li.querySelector("button");
  if (button) button.disabled = true;
  client.unsubscribe(filter, (err) => {
    if (err) {
      li.querySelector(".text").textContent = `${filter}: unsubscribe failed (${err.message})`;
      if (button) button.disabled = false;
      return;
    }
    li.remove();
  });
}

function show(payload) {
  const view = $("#view").value;
  if (view === "hex") {
    return [...payload].map((b) => b.toString(16).padStart(2, "0")).join(" ");
  }
  const text = new TextDecoder().decode(payload);
  if (view === "json") {
    const value = hub.parseJson(text);
    return value === undefined ? `(not JSON) ${text}` : JSON.stringify(value, null, 2);
  }
  return text;
}

function renderMessages() {
  renderQueued = false;
  $("#messages").replaceChildren(...received.slice().reverse().map((m) => el("li",
    { dataset: { topic: m.topic } },
    el("span", { className: "topic", text: m.topic }),
    el("span", {
      className: "meta",
      text: `QoS ${m.qos}${m.retain ? " · retained" : ""} · ${m.time.toLocaleTimeString()}`,
    }),
    el("span", { className: "payload", text: show(m.payload) }))));
}

function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(renderMessages);
}

$("#connect-form").addEventListener("submit", (event) => {
  event.preventDefault();
  if (client) client.end(true);
  $("#subscriptions").replaceChildren(); // a new login starts with no subscriptions
  setStatus("connecting…", false);
  const password = $("#password").value;
  client = mqtt.connect($("#url").value, hub.mqttOptions({
    clientId: $("#client-id").value || undefined,
    clean: true, // nothing carried over from an earlier session of this client id
    username: $("#username").value || undefined,
    password: password || undefined,
    reconnectPeriod: 0, // a refused login is reported, not retried forever
    connectTimeout: 10000,
  }));
  const mine = client; // the events of an earlier connection change nothing on the page
  client.on("connect", () => {
    if (client !== mine) return;
    setConnected(true);
    setStatus("connected", true, `as ${client.options.clientId}`);
  });
  client.on("error", (err) => {
    if (client !== mine) return;
    setStatus("refused", false, REFUSALS[err.code] || err.message);
  });
  client.on("close", () => {
    if (client !== mine) return;
    setConnected(false);
    if ($("#status").textContent === "connected" || $("#status").textContent === "connecting…") {
      setStatus("not connected", false, "the connection closed");
    }
  });
  client.on("message", (topic, payload, packet) => {
    if (client !== mine) return;
    received.push({
      topic, payload: new Uint8Array(payload), qos: packet.qos, retain: packet.retain, time: new Date(),
    });
    if (received.length > MAX_MESSAGES) received.shift();
    scheduleRender();
  });
});

$("#disconnect").addEventListener("click", () => {
  if (client) client.end();
  setStatus("not connected", false);
});

$("#subscribe-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const filter = $("#sub-filter").value.trim();
  if (!filter || !client) return;
  const existing = [...$("#subscriptions").children].find((li) => li.dataset.filter === filter);
  client.subscribe(filter, { qos: Number($("#sub-qos").value) }, (err, granted) => {
    const code = granted && granted[0] ? granted[0].qos : 128;
    const row = subscriptionRow(filter, code, err || code === 128);
    if (existing && existing.isConnected) existing.replaceWith(row);
    else $("#subscriptions").append(row);
  });
});

$("#publish-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const topic = $("#pub-topic").value.trim();
  if (!topic || !client) return;
  publish(topic, $("#pub-payload").value, Number($("#pub-qos").value), $("#pub-retain").checked);
});

$("#clear-retained").addEventListener("click", () => {
  const topic = $("#pub-topic").value.trim();
  if (!topic || !client) return;
  publish(topic, "", Number($("#pub-qos").value), true);
});

$("#username").addEventListener("input", updateHint);
$("#client-id").addEventListener("input", updateHint);

$("#view").addEventListener("change", renderMessages);
$("#clear").addEventListener("click", () => {
  received.length = 0;
  renderMessages();
});

// A renewed session token replaces the old one in the form, and in a live connection that
// logged in with it (its next reconnect uses the new one).
hub.onToken((info) => {
  if ($("#password").value === sessionToken) $("#password").value = info.token;
  if (client && client.options.password === sessionToken) client.options.password = info.token;
  sessionToken = info.token;
});

(async function start() {
  $("#client-id").value = `web-${Math.random().toString(16).slice(2, 10)}`;
  let session;
  let info;
  try {
    ({ session, info } = await hub.start());
  } catch (err) {
    setStatus("cannot start", false, err.message);
    return;
  }
  hub.showUser(session);
  $("#url").value = hub.wsUrl(info);
  $("#username").value = typeof info.username === "string" ? info.username : "token";
  $("#password").value = info.token;
  sessionToken = info.token;
  updateHint();
  const topics = hub.isObject(info.topics) ? info.topics : {};
  if (typeof topics.telemetry === "string") {
    $("#sub-filter").placeholder = hub.topicFilter(topics.telemetry);
  }
})();
