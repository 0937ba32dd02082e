// A web MQTT client on the hub's WebSocket network: connect with the session's MQTT token (or
// other credentials typed in), subscribe, watch messages (text, hex or JSON), publish with QoS
// and retain. Topics and payloads are shown with textContent: they never become markup.
"use strict";

const $ = (s) => document.querySelector(s);
const { el } = hub;
const MAX_MESSAGES = 500;
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
  setStatus("connecting…", false);
  const password = $("#password").value;
  client = mqtt.connect($("#url").value, hub.mqttOptions({
    clientId: $("#client-id").value || undefined,
    username: $("#username").value || undefined,
    password: password || undefined,
    reconnectPeriod: 0, // a refused login is reported, not retried forever
    connectTimeout: 10000,
  }));
  client.on("connect", () => {
    setConnected(true);
    setStatus("connected", true, `as ${client.options.clientId}`);
  });
  client.on("error", (err) => {
    setStatus("refused", false, REFUSALS[err.code] || err.message);
  });
  client.on("close", () => {
    setConnected(false);
    if ($("#status").textContent === "connected" || $("#status").textContent === "connecting…") {
      setStatus("not connected", false, "the connection closed");
    }
  });
  client.on("message", (topic, payload, packet) => {
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
  client.subscribe(filter, { qos: Number($("#sub-qos").value) }, (err, granted) => {
    const code = granted && granted[0] ? granted[0].qos : 128;
    const refused = err || code === 128;
    $("#subscriptions").append(el("li", {
      dataset: { filter },
      className: refused ? "refused" : null,
      text: refused
        ? `${filter}: refused by the hub (outside this login's topic rules)`
        : `${filter}: granted QoS ${code}`,
    }));
  });
});

$("#publish-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const topic = $("#pub-topic").value.trim();
  if (!topic || !client) return;
  client.publish(topic, $("#pub-payload").value, {
    qos: Number($("#pub-qos").value),
    retain: $("#pub-retain").checked,
  });
});

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
  const topics = hub.isObject(info.topics) ? info.topics : {};
  if (typeof topics.telemetry === "string") {
    $("#sub-filter").placeholder = hub.topicFilter(topics.telemetry);
  }
})();
