// The device page's desired-state panel: each setting's desired value (and the group or the
// device's own document it comes from), what the device last reported, and what is still to
// be sent (the delta); an admin sets or unsets a setting of the device's own document. A write
// names the version it was based on: when the document changed meanwhile the hub refuses it
// (409) and the panel reloads. Every value is shown as text, never markup.
"use strict";

const desiredPanel = (() => {
  const { el } = hub;
  const $ = (selector) => document.querySelector(selector);
  const REFRESH_MS = 5000;
  const TEXT_KEYS = ["hub_host", "wifi_ssid", "app"]; // "1.2" is a version, not a number
  const MAX_ROWS = 64;
  const state = { id: "", admin: false, version: 0, own: {}, loaded: false };

  const path = (tail) => `/api/devices/${encodeURIComponent(state.id)}${tail}`;

  function show(message, ok) {
    const box = $("#desired-reply");
    box.hidden = !message;
    box.textContent = message || "";
    box.className = `reply ${ok ? "ok" : "error"}`;
  }

  function shown(value) {
    if (value === undefined) return "";
    const textValue = typeof value === "string" ? value : JSON.stringify(value);
    return hub.text(textValue, 300) || "";
  }

  function render(answer) {
    const desired = hub.isObject(answer.desired) ? answer.desired : {};
    const sources = hub.isObject(answer.sources) ? answer.sources : {};
    const delta = hub.isObject(answer.delta) ? answer.delta : {};
    const reported = hub.isObject(answer.reported) ? answer.reported : {};
    const settings = hub.isObject(reported.settings) ? reported.settings : {};
    const outcome = hub.isObject(answer.outcome) ? answer.outcome : {};
    const keys = [...new Set([...Object.keys(desired), ...Object.keys(settings)])]
      .sort().slice(0, MAX_ROWS);
    const rows = keys.map((key) => {
      const now = key === "app" ? reported.fw : settings[key];
      const pending = Object.prototype.hasOwnProperty.call(delta, key);
      return el("tr", { className: pending ? "pending" : "", dataset: { key } },
        el("td", { text: key }),
        el("td", { className: "desired-value", text: shown(desired[key]) }),
        el("td", { className: "muted", text: shown(sources[key]) }),
        el("td", { className: "reported-value", text: shown(now) }),
        el("td", { className: "delta", text: pending ? `pending: ${shown(delta[key])}` : "" }));
    });
    $("#desired-rows").replaceChildren(...rows);
    $("#desired-empty").hidden = rows.length > 0;
    const groups = Array.isArray(answer.groups) ? answer.groups.filter((g) => typeof g === "string") : [];
    const parts = [`device document version ${hub.integer(answer.version) ?? 0}`];
    if (groups.length) parts.push(`groups (highest precedence first): ${groups.join(", ")}`);
    if (reported.fw) parts.push(`reported app ${shown(reported.fw)}`);
    $("#desired-meta").textContent = parts.join(" · ");
    const states = { pending: "sent, waiting for the device's trial", applied: "applied",
      failed: "failed", lost: "lost on the way: sent again when the device is back" };
    let said = states[outcome.state] || "";
    if (outcome.state === "failed" && typeof outcome.error === "string") {
      said = `failed: ${hub.text(outcome.error, 200)}`;
    }
    if (typeof outcome.app_failed === "string") said += ` · app ${hub.text(outcome.app_failed, 40)} failed`;
    const pendingKeys = Object.keys(delta).sort();
    $("#desired-outcome").textContent = [
      pendingKeys.length ? `pending: ${pendingKeys.join(", ")}` : "nothing pending",
      said ? `last delta: ${said}` : "",
    ].filter(Boolean).join(" · ");
  }

  async function load() {
    try {
      const [stateAnswer, doc] = await Promise.all([
        hub.api(path("/state")),
        state.admin ? hub.api(path("/desired")) : Promise.resolve(null),
      ]);
      if (hub.isObject(stateAnswer)) render(stateAnswer);
      if (hub.isObject(doc)) {
        state.version = hub.integer(doc.version) ?? 0;
        state.own = hub.isObject(doc.desired) ? doc.desired : {};
      }
      state.loaded = true;
    } catch (err) {
      if (err.status === 404 || err.status === 403) $("#desired-panel").hidden = true;
      else show(`desired state: ${err.message}`, false);
    }
  }

  function parseValue(key, raw) {
    if (TEXT_KEYS.includes(key)) return raw;
    try {
      return JSON.parse(raw);
    } catch (err) {
      return raw;
    }
  }

  async function write(change) {
    const next = { ...state.own };
    change(next);
    try {
      const answer = await hub.api(path("/desired"), {
        method: "PUT", body: { version: state.version, desired: next },
      });
      state.version = hub.integer(answer && answer.version) ?? state.version;
      show(`saved: version ${state.version}`, true);
      $("#desired-value").value = "";
    } catch (err) {
      const why = err.status === 409 ? `${err.message} (reloaded)` : err.message;
      show(why, false);
    }
    await load();
  }

  function init(id, role) {
    state.id = id;
    state.admin = role === "admin";
    const form = $("#desired-form");
    if (state.admin) {
      form.hidden = false;
      form.addEventListener("submit", (event) => {
        event.preventDefault();
        const key = $("#desired-key").value.trim();
        if (!key) return;
        const value = parseValue(key, $("#desired-value").value);
        write((doc) => { doc[key] = value; });
      });
      $("#desired-unset").addEventListener("click", () => {
        const key = $("#desired-key").value.trim();
        if (!key) return;
        if (!Object.prototype.hasOwnProperty.call(state.own, key)) {
          show(`${key} is not set in this device's own document`, false);
          return;
        }
        write((doc) => { delete doc[key]; });
      });
    } else {
      form.remove(); // what a role may not use is removed, not merely hidden
    }
    load();
    setInterval(() => {
      if (!document.hidden) load();
    }, REFRESH_MS);
  }

  return { init, load, state };
})();
