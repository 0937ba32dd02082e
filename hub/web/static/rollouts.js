// Rollouts (admin): the list, one rollout's stages and each device's state, refreshed every
// 2 s; start, pause, resume, cancel. Everything the hub or a device sent is rendered as text.
"use strict";

(() => {
  const { el } = hub;
  const $ = (selector) => document.querySelector(selector);
  const REFRESH_MS = 2000;
  const MAX_ROWS = 1000; // devices shown of one rollout
  let selected = null; // the rollout shown, by id
  let timer = null;

  function showError(selector, message) {
    const box = $(selector);
    box.hidden = !message;
    box.textContent = message || "";
  }

  const id = (value) => (Number.isInteger(value) && value > 0 ? value : null);

  function counts(raw) {
    if (!hub.isObject(raw)) return "";
    return Object.entries(raw)
      .filter(([state, n]) => typeof state === "string" && hub.integer(n) !== null)
      .map(([state, n]) => `${hub.text(state, 20)} ${hub.integer(n)}`)
      .join(" · ");
  }

  function listRow(r) {
    const rid = id(r.id);
    if (rid === null) return null;
    const item = el(
      "li",
      { dataset: { rollout: String(rid) }, className: rid === selected ? "selected" : "" },
      el("a", { href: `/rollouts#${rid}`, text: `#${rid} ${hub.text(r.version, 40) || "?"}` }),
      " ",
      el("span", { className: "badge neutral", dataset: { field: "status" }, text: hub.text(r.status, 20) || "?" }),
      " ",
      el("span", { className: "muted", text: counts(r.counts) }),
    );
    return item;
  }

  async function loadList() {
    let answer;
    try {
      answer = await hub.api("/api/rollouts");
    } catch (err) {
      showError("#page-error", `could not list rollouts: ${err.message}`);
      return;
    }
    showError("#page-error", "");
    const rows = hub.isObject(answer) && Array.isArray(answer.rollouts) ? answer.rollouts : [];
    const items = rows.filter(hub.isObject).map(listRow).filter(Boolean);
    $("#rollouts").replaceChildren(...items);
    $("#no-rollouts").hidden = items.length > 0;
    $("#rollout-count").textContent = items.length ? `(${items.length})` : "";
    if (selected === null && items.length) selected = Number(items[0].dataset.rollout);
  }

  function stageRow(s) {
    const name = hub.text(s.name, 20) || "?";
    const devices = hub.integer(s.devices) ?? 0;
    const done = hub.integer(s.done) ?? 0;
    return el(
      "li",
      { className: s.current === true ? "current" : "", dataset: { stage: name } },
      `${name}: ${done} of ${devices} done`,
      s.current === true ? " (current)" : "",
    );
  }

  function memberRow(d) {
    const assigned = hub.number(d.assigned_at);
    return el(
      "tr",
      { dataset: { device: hub.text(d.device, 64) || "" } },
      el("td", { text: hub.text(d.device, 64) || "?" }),
      el("td", { text: hub.text(d.stage, 20) || "" }),
      el("td", { dataset: { field: "state" }, text: hub.text(d.state, 20) || "?" }),
      el("td", { text: hub.text(d.error) || "" }),
      el("td", { text: assigned === null ? "" : hub.when(assigned) }),
    );
  }

  async function loadOne() {
    if (selected === null) {
      $("#rollout-panel").hidden = true;
      return;
    }
    let r;
    try {
      r = await hub.api(`/api/rollouts/${selected}`);
    } catch (err) {
      showError("#rollout-error", `could not read rollout ${selected}: ${err.message}`);
      return;
    }
    if (!hub.isObject(r)) return;
    const status = hub.text(r.status, 20) || "?";
    $("#rollout-panel").hidden = false;
    $("#rollout-title").textContent =
      `Rollout #${selected}: ${hub.text(r.version, 40) || "?"} to ${hub.text(r.target, 80) || "?"}`;
    $("#rollout-status").textContent = status;
    $("#rollout-reason").textContent = hub.text(r.reason, 300) || "";
    $("#rollout-pause").hidden = status !== "running";
    $("#rollout-resume").hidden = status !== "paused";
    $("#rollout-cancel").hidden = status !== "running" && status !== "paused";
    const stages = Array.isArray(r.stages) ? r.stages.filter(hub.isObject) : [];
    $("#stages").replaceChildren(...stages.map(stageRow));
    const members = Array.isArray(r.devices) ? r.devices.filter(hub.isObject) : [];
    $("#members tbody").replaceChildren(...members.slice(0, MAX_ROWS).map(memberRow));
    $("#rollout-counts").textContent = counts(r.counts);
  }

  async function refresh() {
    clearTimeout(timer);
    await loadList();
    await loadOne();
    timer = setTimeout(refresh, REFRESH_MS);
  }

  async function act(action) {
    showError("#rollout-error", "");
    try {
      await hub.api(`/api/rollouts/${selected}/${action}`, { method: "POST" });
    } catch (err) {
      showError("#rollout-error", err.message);
    }
    await refresh();
  }

  function numberField(selector) {
    const text = $(selector).value.trim();
    return text === "" ? undefined : Number(text);
  }

  async function start(event) {
    event.preventDefault();
    const body = { app: $("#start-app").value.trim() };
    const devices = $("#start-devices").value.trim();
    const group = $("#start-group").value.trim();
    if (devices) body.devices = devices;
    if (group) body.group = group;
    const steps = $("#start-steps").value.trim();
    if (steps) body.steps = steps;
    for (const [name, selector] of [
      ["canary", "#start-canary"], ["max_per_minute", "#start-rate"],
      ["abort_failed_pct", "#start-abort"], ["timeout_per_device", "#start-timeout"],
    ]) {
      const value = numberField(selector);
      if (value !== undefined) body[name] = value;
    }
    showError("#start-error", "");
    try {
      const made = await hub.api("/api/rollouts", { method: "POST", body });
      if (hub.isObject(made) && id(made.id) !== null) {
        selected = made.id;
        location.hash = String(made.id);
      }
    } catch (err) {
      showError("#start-error", err.message);
    }
    await refresh();
  }

  function fromHash() {
    const n = Number(location.hash.slice(1));
    if (Number.isInteger(n) && n > 0) selected = n;
  }

  async function main() {
    let session;
    try {
      ({ session } = await hub.start());
    } catch (err) {
      showError("#page-error", `could not start: ${err.message}`);
      return;
    }
    hub.showUser(session);
    fromHash();
    window.addEventListener("hashchange", () => {
      fromHash();
      refresh();
    });
    $("#start-form").addEventListener("submit", start);
    $("#rollout-pause").addEventListener("click", () => act("pause"));
    $("#rollout-resume").addEventListener("click", () => act("resume"));
    $("#rollout-cancel").addEventListener("click", () => act("cancel"));
    await refresh();
  }

  main();
})();
