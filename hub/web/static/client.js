// A web MQTT client on the hub's WebSocket network: connect with a token or device
// credentials, subscribe, watch messages (text, hex or JSON), publish with QoS and retain.
"use strict";

const $ = (s) => document.querySelector(s);
const MAX_MESSAGES = 500;
const REFUSALS = {
  1: "refused: unacceptable protocol version",
  2: "refused: client id rejected",
  3: "refused: server unavailable",
  4: "refused: bad user name or password (or an expired token)",
  5: "refused: not authorized",
};
let client = null;
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

function render(payload) {
  const view = $("#view").value;
  if (view === "hex") {
    return [...payload].map((b) => b.toString(16).padStart(2, "0")).join(" ");
  }
  const text = new TextDecoder().decode(payload);
  if (view === "json") {
    try {
      return JSON.stringify(JSON.parse(text), null, 2);
    } catch (err) {
      return `(not JSON) ${text}`;
    }
  }
  return text;
}

function renderMessages() {
  const list = $("#messages");
  list.innerHTML = "";
  for (const m of received.slice().reverse()) {
    const li = document.createElement("li");
    li.dataset.topic = m.topic;
    const topic = document.createElement("span");
    topic.className = "topic";
    topic.textContent = m.topic;
    const meta = document.createElement("span");
    meta.className = "meta";
    meta.textContent = `QoS ${m.qos}${m.retain ? " · retained" : ""} · ${m.time.toLocaleTimeString()}`;
    const payload = document.createElement("span");
    payload.className = "payload";
    payload.textContent = render(m.payload);
    li.append(topic, meta, payload);
    list.append(li);
  }
}

$("#connect-form").addEventListener("submit", (event) => {
  event.preventDefault();
  if (client) client.end(true);
  setStatus("connecting…", false);
  client = mqtt.connect($("#url").value, {
    protocolVersion: 4,
    clientId: $("#client-id").value || undefined,
    username: $("#username").value || undefined,
    password: $("#password").value || undefined,
    reconnectPeriod: 0, // a refused login is reported, not retried forever
    connectTimeout: 10000,
  });
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
    received.push({ topic, payload: new Uint8Array(payload), qos: packet.qos, retain: packet.retain, time: new Date() });
    if (received.length > MAX_MESSAGES) received.shift();
    renderMessages();
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
    const li = document.createElement("li");
    li.dataset.filter = filter;
    const code = granted && granted[0] ? granted[0].qos : 128;
    if (err || code === 128) {
      li.className = "refused";
      li.textContent = `${filter}: refused by the hub (outside this login's topic rules)`;
    } else {
      li.textContent = `${filter}: granted QoS ${code}`;
    }
    $("#subscriptions").append(li);
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

(async function start() {
  const info = await (await fetch("/api/hub")).json();
  const proto = location.protocol === "https:" ? "wss" : "ws";
  $("#url").value = `${proto}://${location.hostname}:${info.ws_port}${info.ws_path}`;
  $("#client-id").value = `web-${Math.random().toString(16).slice(2, 10)}`;
})();
