// Console accounts for admins: add one (its one-time password shown once), enable and disable,
// remove (confirmed). Errors are shown as text; names never become markup.
"use strict";

const userAdmin = (() => {
  const { el } = hub;
  const $ = (selector) => document.querySelector(selector);
  let confirming = null; // the account whose removal waits for a confirmation
  let accounts = [];

  function showError(text) {
    $("#users-error").hidden = !text;
    $("#users-error").textContent = text || "";
  }

  async function load() {
    try {
      const list = await hub.api("/api/users");
      accounts = (Array.isArray(list) ? list : []).filter(
        (a) => hub.isObject(a) && typeof a.name === "string");
    } catch (err) {
      showError(`could not list accounts: ${err.message}`);
    }
    render();
  }

  async function act(work) {
    showError("");
    try {
      await work();
    } catch (err) {
      showError(err.message);
    }
    await load();
  }

  const path = (name, tail = "") => `/api/users/${encodeURIComponent(name)}${tail}`;

  function closeSecret() {
    $("#user-secret").hidden = true;
    $("#user-secret-fields").replaceChildren();
  }

  function add(event) {
    event.preventDefault();
    const name = $("#add-user-name").value.trim();
    if (!name) return;
    act(async () => {
      const answer = await hub.api("/api/users", {
        method: "POST", body: { name, role: $("#add-user-role").value },
      });
      if (!hub.isObject(answer) || typeof answer.password !== "string") {
        throw new Error("the hub's answer holds no password");
      }
      $("#user-secret-title").textContent = `Account ${name} added`;
      $("#user-secret-fields").replaceChildren(
        ...[["name", name], ["role", hub.text(answer.role, 16) || ""], ["password", answer.password]]
          .flatMap(([key, value]) => [el("dt", { text: key }),
            el("dd", { dataset: { field: key }, text: value })]));
      $("#user-secret").hidden = false;
      $("#add-user-name").value = "";
    });
  }

  function button(text, className, handler) {
    return el("button", { type: "button", className, text, on: { click: handler } });
  }

  function row(account) {
    const name = account.name;
    const self = hub.session && hub.session.name === name;
    const role = hub.text(account.role, 16) || "?";
    const enabled = account.enabled !== false;
    let actions;
    if (self) {
      actions = [el("span", { className: "muted", text: "you" })];
    } else if (confirming === name) {
      actions = [
        el("span", { className: "bad", text: `remove ${name} for good?` }),
        button("yes, remove", "confirm-remove danger", () => {
          confirming = null;
          act(() => hub.api(path(name), { method: "DELETE" }));
        }),
        button("cancel", "cancel-remove", () => { confirming = null; render(); }),
      ];
    } else {
      actions = [
        enabled
          ? button("disable", "disable", () => act(() => hub.api(path(name, "/disable"), { method: "POST" })))
          : button("enable", "enable", () => act(() => hub.api(path(name, "/enable"), { method: "POST" }))),
        button("remove", "remove danger", () => { confirming = name; render(); }),
      ];
    }
    return el("li", { dataset: { user: name } },
      el("div", { className: "row" },
        el("span", { className: "name", text: name }),
        el("span", { className: "role muted", text: role }),
        el("span", {
          className: `badge state ${enabled ? "online" : "offline"}`,
          text: enabled ? "enabled" : "disabled",
        })),
      el("div", { className: "actions" }, actions));
  }

  function render() {
    $("#users").replaceChildren(...accounts.map(row));
  }

  function init() {
    $("#add-user-form").addEventListener("submit", add);
    $("#user-secret-close").addEventListener("click", closeSecret);
    load();
  }

  return { init };
})();
