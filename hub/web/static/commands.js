// Commands on the device page: POST ...commands?wait=0 answers at once with the command's id;
// the form shows it pending (and, for an offline device, until when the hub keeps it queued),
// then its reply, matched by id, from the reply topic or from polling the command. A late reply
// to an older command goes to the history only: it never overwrites the newer command's state.
"use strict";

const commands = (() => {
  const { el } = hub;
  const $ = (selector) => document.querySelector(selector);
  const POLL_MS = 2000;
  const MAX_REPLIES = 20;
  let device = null;
  let current = null; // {id, status, online, expires_at, op}
  let pollTimer = null;
  let onHistory = () => {};
  const replies = [];

  // A reply is shown field by field: strings as they are (as text), other values as JSON.
  function replyFields(reply) {
    if (!hub.isObject(reply)) return [["reply", hub.text(String(reply))]];
    return Object.entries(reply).slice(0, 20).map(([key, value]) => [
      hub.text(key, 40),
      typeof value === "string" ? hub.text(value) : hub.text(JSON.stringify(value)),
    ]);
  }

  function replyNode(reply, tag = "div") {
    return el(tag, { className: "fields" },
      replyFields(reply).map(([key, value]) =>
        el("span", { className: "field" }, el("b", { text: `${key}: ` }), value)));
  }

  function commandId(value) {
    return typeof value === "string" || typeof value === "number" ? hub.text(String(value), 64) : null;
  }

  // The form's box, from the current command's state.
  function show() {
    const box = $("#command-reply");
    if (!box || !current) return;
    box.hidden = false;
    box.dataset.command = current.id || "";
    box.dataset.status = current.status;
    if (current.status === "replied") {
      box.className = hub.isObject(current.reply) && current.reply.ok === true ? "reply" : "reply error";
      box.replaceChildren(replyNode(current.reply));
    } else if (current.status === "expired") {
      box.className = "reply error";
      box.textContent = `${current.op}: expired without a reply (the hub kept it until ${hub.when(current.expires_at)})`;
    } else if (current.status === "pending") {
      box.className = "reply pending";
      box.textContent = current.online === false
        ? `${current.op}: pending, the device is offline: queued for it until ${hub.when(current.expires_at)}`
        : `${current.op}: pending, sent, waiting for the reply…`;
    } else {
      box.className = "reply error";
      box.textContent = current.error || "failed";
    }
  }

  function settle(command) {
    clearTimeout(pollTimer);
    if (!current || !command) return;
    const status = hub.text(command.status, 16);
    if (status === "replied" || status === "expired") {
      current.status = status;
      current.reply = command.reply;
      show();
      onHistory();
      return;
    }
    if (hub.number(command.expires_at) !== null) current.expires_at = command.expires_at;
    show();
    schedulePoll();
  }

  function schedulePoll() {
    clearTimeout(pollTimer);
    const mine = current;
    pollTimer = setTimeout(async () => {
      if (current !== mine || !mine.id) return;
      try {
        const path = `/api/devices/${encodeURIComponent(device)}/commands/${encodeURIComponent(mine.id)}`;
        const command = await hub.api(path);
        if (current === mine) settle(command);
      } catch (err) {
        if (current === mine && err.status !== 404) schedulePoll();
      }
    }, POLL_MS);
  }

  // A reply from the reply topic: the log gets every one, the form only its own command's.
  function onReply(payload) {
    const reply = hub.parseJson(payload);
    if (reply === undefined) return;
    replies.unshift(reply);
    replies.length = Math.min(replies.length, MAX_REPLIES);
    $("#replies").replaceChildren(...replies.map((r) => replyNode(r, "li")));
    const id = hub.isObject(reply) ? commandId(reply.id) : null;
    if (current && current.status === "pending" && id !== null && id === current.id) {
      current.status = "replied";
      current.reply = reply;
      clearTimeout(pollTimer);
      show();
      onHistory();
    }
  }

  async function send(event) {
    event.preventDefault();
    const box = $("#command-reply");
    box.hidden = false;
    let extra = {};
    const args = $("#command-args").value.trim();
    if (args) {
      extra = hub.parseJson(args);
      if (!hub.isObject(extra)) {
        box.className = "reply error";
        box.textContent = "the extra arguments must be a JSON object";
        return;
      }
    }
    const op = $("#command-op").value;
    clearTimeout(pollTimer);
    const mine = { id: null, status: "pending", online: null, op };
    current = mine;
    box.className = "reply pending";
    box.textContent = `${op}: sending…`;
    try {
      const answer = await hub.api(`/api/devices/${encodeURIComponent(device)}/commands?wait=0`, {
        method: "POST", body: { ...extra, op },
      });
      if (current !== mine) return;
      if (hub.isObject(answer) && answer.status === "pending") {
        mine.id = commandId(answer.id);
        mine.online = answer.online === true ? true : answer.online === false ? false : null;
        mine.expires_at = hub.number(answer.expires_at);
        show();
        schedulePoll();
      } else {
        // A hub without wait=0 answers with the reply itself.
        mine.status = "replied";
        mine.reply = answer;
        show();
      }
    } catch (err) {
      if (current !== mine) return;
      mine.status = "failed";
      mine.error = err.message;
      show();
    }
    onHistory();
  }

  // The history list: who sent what, its state and its reply.
  function historyRow(command) {
    const status = hub.text(command.status, 16) || "?";
    const body = hub.isObject(command.body) ? hub.text(JSON.stringify(command.body)) : "";
    return el("li", { dataset: { command: commandId(command.id) || "", status } },
      el("span", { className: "muted", text: `${hub.when(command.sent_at)} ` }),
      el("b", { className: "op", text: hub.text(command.op, 32) || "?" }),
      body ? el("span", { className: "body", text: ` ${body}` }) : null,
      el("span", { className: "by", text: ` by ${hub.text(command.by, 64) || "?"} ` }),
      el("span", { className: `status ${["pending", "replied", "expired"].includes(status) ? status : ""}`, text: status }),
      status === "pending" && hub.number(command.expires_at) !== null
        ? el("span", { className: "muted", text: ` until ${hub.when(command.expires_at)}` }) : null,
      command.reply !== null && command.reply !== undefined ? replyNode(command.reply) : null);
  }

  function init(id, role, historyChanged) {
    device = id;
    onHistory = historyChanged;
    if (role === "operator" || role === "admin") {
      $("#command-form").hidden = false;
      $("#command-form").addEventListener("submit", send);
    } else {
      $("#command-form").remove();
    }
  }

  return { init, onReply, historyRow, replyNode };
})();
