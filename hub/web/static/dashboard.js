// Live fleet table: subscribes to the topic contract over the MQTT-over-WebSocket network.
"use strict";

const fleet = new Map(); // device -> { status, readings: Map(sensor -> reading) }
const tbody = document.querySelector("#fleet tbody");
const linkBadge = document.getElementById("link");

function device(id) {
  if (!fleet.has(id)) fleet.set(id, { status: "unknown", readings: new Map() });
  return fleet.get(id);
}

function parseReading(payload) {
  const [boot, seq, value] = payload.split(",");
  return { boot, seq: Number(seq), value: Number(value), received: new Date() };
}

function render() {
  document.getElementById("empty").hidden = fleet.size > 0;
  const rows = [];
  for (const [id, dev] of [...fleet.entries()].sort()) {
    const sensors = dev.readings.size ? [...dev.readings.entries()] : [[null, null]];
    for (const [sensor, r] of sensors) {
      rows.push(`<tr data-device="${id}" data-sensor="${sensor ?? ""}">
        <td>${id}</td><td><span class="badge ${dev.status}">${dev.status}</span></td>
        <td>${sensor ?? ""}</td><td class="value">${r ? r.value : ""}</td>
        <td>${r ? r.seq : ""}</td><td>${r ? r.received.toLocaleTimeString() : ""}</td></tr>`);
    }
  }
  tbody.innerHTML = rows.join("");
}

async function start() {
  const info = await (await fetch("/api/hub")).json();
  const proto = location.protocol === "https:" ? "wss" : "ws";
  const url = `${proto}://${location.hostname}:${info.ws_port}${info.ws_path}`;
  // A read-only token from the hub; MQTT.js asks for a fresh one before each reconnect.
  const client = mqtt.connect(url, {
    protocolVersion: 4,
    reconnectPeriod: 2000,
    username: info.username,
    password: info.token,
  });
  client.on("reconnect", async () => {
    try {
      const fresh = await (await fetch("/api/hub")).json();
      client.options.password = fresh.token;
    } catch (err) {
      console.warn("could not refresh the dashboard token", err);
    }
  });
  client.on("connect", () => {
    linkBadge.textContent = "live";
    linkBadge.className = "badge online";
    client.subscribe(["d/+/t/+", "d/+/s"], { qos: 0 });
  });
  client.on("close", () => {
    linkBadge.textContent = "disconnected";
    linkBadge.className = "badge offline";
  });
  client.on("message", (topic, payload) => {
    const parts = topic.split("/");
    const text = payload.toString();
    if (parts[2] === "t" && parts.length === 4) {
      device(parts[1]).readings.set(parts[3], parseReading(text));
    } else if (parts[2] === "s" && parts.length === 3) {
      device(parts[1]).status = text === "online" ? "online" : "offline";
    }
    render();
  });
}

start();
