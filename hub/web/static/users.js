// Console accounts for admins: add one (its one-time password shown once), enable and disable,
// remove (confirmed). Errors are shown as text; names never become markup.
"use strict";

const userAdmin = (() => {
  const { el, button } = hub;
  const $ = (selector) => document.querySelector(selector);
  let confirming = null; // the account whose removal waits for a confirmation
  let accounts = [];
  const { showError, act } = hub.adminPanel("#users-error", () => load());

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
      $("#user-secret-fields").replaceChildren(...hub.fieldList(
        [["name", name], ["role", hub.text(answer.role, 16) || ""], ["password", answer.password]]));
      $("#user-secret").hidden = false;
      $("#add-user-name").value = "";
    });
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
      actions = hub.confirmRemove(name, () => {
        confirming = null;
        act(() => hub.api(path(name), { method: "DELETE" }));
      }, () => { confirming = null; render(); });
    } else {
      actions = [
        enabled
          ? button("disable", "disable", () => act(() => hub.api(path(name, "/disable"), { method: "POST" })))
          : button("enable", "enable", () => act(() => hub.api(path(name, "/enable"), { method: "POST" }))),
        button("remove", "remove danger", () => { confirming = name; render(); }),
      ];
    }
    return el("li", { dataset: { user: name } },
      hub.enabledRow(name, enabled, el("span", { className: "role muted", text: role })),
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
