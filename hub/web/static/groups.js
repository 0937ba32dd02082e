// The groups panel for admins: each group's selector, precedence, size and desired document
// (GET /api/groups). Groups are made with `hub group add`; every value is shown as text.
"use strict";

const groupsPanel = (() => {
  const { el } = hub;
  const $ = (selector) => document.querySelector(selector);
  const REFRESH_MS = 15000;
  const MAX_GROUPS = 200;

  function shown(value) {
    return hub.text(typeof value === "string" ? value : JSON.stringify(value), 120) || "";
  }

  function row(group) {
    const value = Array.isArray(group.value) ? group.value.join(",") : group.value;
    const desired = hub.isObject(group.desired) ? group.desired : {};
    const settings = Object.entries(desired).map(([k, v]) => `${k}=${shown(v)}`);
    return el("li", { dataset: { group: group.name } },
      el("span", { className: "name", text: group.name }), " ",
      el("span", { className: "muted", text: `${hub.text(group.kind, 16)}=${shown(value)}` }), " ",
      el("span", { className: "badge neutral", text: `priority ${hub.integer(group.priority) ?? 0}` }), " ",
      el("span", { className: "badge neutral", text: `${hub.integer(group.size) ?? 0} devices` }), " ",
      el("span", { className: "desired", text: settings.length
        ? `version ${hub.integer(group.version) ?? 0}: ${settings.join(" ")}`
        : "no desired state" }));
  }

  async function load() {
    const box = $("#groups-error");
    try {
      const answer = await hub.api("/api/groups");
      const groups = (hub.isObject(answer) && Array.isArray(answer.groups) ? answer.groups : [])
        .filter((g) => hub.isObject(g) && typeof g.name === "string").slice(0, MAX_GROUPS);
      $("#groups").replaceChildren(...groups.map(row));
      if (!groups.length) $("#groups").append(el("li", { className: "muted", text: "No groups yet." }));
      box.hidden = true;
    } catch (err) {
      box.hidden = false;
      box.textContent = `could not list groups: ${err.message}`;
    }
  }

  function init() {
    load();
    setInterval(() => {
      if (!document.hidden) load();
    }, REFRESH_MS);
  }

  return { init, load };
})();
