// Device management for admins: add (the secret shown once), enable and disable, rotate (a new
// secret shown once), TLS policy, client certificates (DER downloads), remove (confirmed).
// Errors are shown as text; nothing the hub or a device sent becomes markup.
"use strict";

const deviceAdmin = (() => {
  const { el, button } = hub;
  const $ = (selector) => document.querySelector(selector);
  const POLICIES = ["tls-required", "allow-insecure"]; // the registry's names
  let reload = async () => {};
  const { act } = hub.adminPanel("#manage-error", () => reload());
  let confirming = null; // the id whose removal waits for a confirmation
  let copyText = "";
  let blobUrls = [];
  let devices = new Map();

  const path = (id, tail = "") => `/api/devices/${encodeURIComponent(id)}${tail}`;

  // --- the one-time secret panel ------------------------------------------------------------------
  function closeSecret() {
    for (const url of blobUrls) URL.revokeObjectURL(url);
    blobUrls = [];
    copyText = "";
    $("#secret").hidden = true;
    $("#secret-fields").replaceChildren();
    $("#secret-files").replaceChildren();
  }

  function download(name, base64) {
    const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
    const url = URL.createObjectURL(new Blob([bytes], { type: "application/octet-stream" }));
    blobUrls.push(url);
    return el("a", { href: url, download: name, className: "download", text: `download ${name}` });
  }

  // makeFiles runs after the previous panel's download URLs are revoked, not before.
  function showSecret(title, fields, makeFiles = () => []) {
    closeSecret();
    const files = makeFiles();
    $("#secret-title").textContent = title;
    $("#secret-fields").replaceChildren(...hub.fieldList(fields));
    $("#secret-files").replaceChildren(...files);
    copyText = JSON.stringify(Object.fromEntries(fields));
    $("#secret-copy").hidden = files.length > 0;
    $("#secret-copy").textContent = "copy";
    $("#secret").hidden = false;
  }

  async function copySecret() {
    try {
      await navigator.clipboard.writeText(copyText);
      $("#secret-copy").textContent = "copied";
    } catch (err) {
      // No clipboard access (a plain-http page on another host): select it for Ctrl-C.
      const range = document.createRange();
      range.selectNodeContents($("#secret-fields"));
      const selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      $("#secret-copy").textContent = "selected: press Ctrl-C";
    }
  }

  function credentials(answer, title) {
    if (!hub.isObject(answer) || typeof answer.password !== "string") {
      throw new Error("the hub's answer holds no secret");
    }
    showSecret(title, [
      ["id", hub.text(answer.id, 64) || ""],
      ["username", hub.text(answer.username, 64) || ""],
      ["password", answer.password],
    ]);
  }

  // --- actions ------------------------------------------------------------------------------------
  function add(event) {
    event.preventDefault();
    const id = $("#add-device-id").value.trim();
    if (!id) return;
    act(async () => {
      const answer = await hub.api("/api/devices", {
        method: "POST", body: { id, allow_insecure: $("#add-device-insecure").checked },
      });
      credentials(answer, `Device ${id} added: its secret, shown once`);
      $("#add-device-id").value = "";
    });
  }

  function setEnabled(id, enabled) {
    act(() => hub.api(path(id, enabled ? "/enable" : "/disable"), { method: "POST" }));
  }

  function rotate(id) {
    act(async () => {
      const answer = await hub.api(path(id, "/rotate"), { method: "POST" });
      credentials(answer, `Device ${id}: its new secret, shown once (the old one no longer works)`);
    });
  }

  function setPolicy(id, policy) {
    act(() => hub.api(path(id, "/tls_policy"), { method: "PUT", body: { tls_policy: policy } }));
  }

  function issueCert(id) {
    act(async () => {
      const answer = await hub.api(path(id, "/cert"), { method: "POST" });
      if (!hub.isObject(answer) || typeof answer.cert_der_b64 !== "string"
          || typeof answer.key_der_b64 !== "string") {
        throw new Error("the hub's answer holds no certificate");
      }
      showSecret(`Device ${id}: client certificate (the key is shown once)`,
        [["id", id], ["fingerprint", hub.text(answer.fingerprint, 128) || ""]],
        () => [download(`${id}.cert.der`, answer.cert_der_b64), " ",
          download(`${id}.key.der`, answer.key_der_b64)]);
    });
  }

  function remove(id) {
    confirming = null;
    act(() => hub.api(path(id), { method: "DELETE" }));
  }

  // --- the registry list --------------------------------------------------------------------------
  function row(id, dev) {
    const policy = el("select", { className: "tls-policy", title: "TLS policy" },
      POLICIES.map((p) => el("option", { value: p, text: p, selected: dev.tls_policy === p })));
    policy.addEventListener("change", () => setPolicy(id, policy.value));
    const actions = confirming === id
      ? hub.confirmRemove(id, () => remove(id), () => { confirming = null; render(devices); })
      : [
        dev.enabled === false
          ? button("enable", "enable", () => setEnabled(id, true))
          : button("disable", "disable", () => setEnabled(id, false)),
        button("rotate secret", "rotate", () => rotate(id)),
        button("issue certificate", "cert", () => issueCert(id)),
        button("remove", "remove danger", () => { confirming = id; render(devices); }),
      ];
    return el("li", { dataset: { device: id } },
      hub.enabledRow(id, dev.enabled !== false),
      el("div", { className: "actions" }, policy, actions));
  }

  // A row is made again only when what it shows changed (the fleet page renders this list
  // every 10 s).
  let shown = new Map(); // id -> {key, node}
  function render(all) {
    devices = all;
    const ids = [...all.keys()].filter((id) => all.get(id).registered).sort();
    const next = new Map();
    for (const id of ids) {
      const dev = all.get(id);
      const key = JSON.stringify([dev.enabled, dev.tls_policy, confirming === id]);
      const old = shown.get(id);
      if (old && old.key === key) {
        const policy = old.node.querySelector("select.tls-policy");
        if (policy && dev.tls_policy) policy.value = dev.tls_policy; // a refused change undone
        next.set(id, old);
      } else {
        next.set(id, { key, node: row(id, dev) });
      }
    }
    shown = next;
    hub.syncChildren($("#registry"), [...next.values()].map((r) => r.node));
  }

  function init(reloadDevices) {
    reload = reloadDevices;
    $("#add-device-form").addEventListener("submit", add);
    $("#secret-copy").addEventListener("click", copySecret);
    $("#secret-close").addEventListener("click", closeSecret);
  }

  return { init, render };
})();
