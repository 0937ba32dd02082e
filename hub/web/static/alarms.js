// The alarms panel: active alarms (acknowledge: operators and admins) and, for admins, the
// alarm rules (add, list, remove). Names and values come from the hub (and from devices before
// it): shown with textContent only.
"use strict";

const alarmsPanel = (() => {
  const { el } = hub;
  const $ = (selector) => document.querySelector(selector);
  const ROLE_RANK = { viewer: 0, operator: 1, admin: 2 };
  const MAX_ALARMS = 200;
  let role = "viewer";
  let onChange = () => {};
  let loading = false;

  function showError(selector, text) {
    $(selector).hidden = !text;
    $(selector).textContent = text || "";
  }

  function alarmRow(alarm) {
    const id = hub.text(String(alarm.id), 40) || "?";
    const device = hub.text(alarm.device, 64);
    const value = hub.number(alarm.value);
    const acked = hub.text(alarm.acknowledged_by, 64);
    return el("li", { dataset: { alarm: id, device: device || "" }, className: "alarm-row" },
      el("span", { className: "rule", text: hub.text(alarm.rule_name, 64) || hub.text(alarm.kind, 32) || "alarm" }),
      " ",
      device ? el("a", { className: "device", href: `/devices/${encodeURIComponent(device)}`, text: device }) : null,
      value === null ? null : el("span", { className: "value", text: ` value ${value}` }),
      el("span", { className: "muted", text: ` since ${hub.when(alarm.raised_at)}` }),
      acked
        ? el("span", { className: "acked", text: ` · acknowledged by ${acked} ${hub.ago(hub.number(alarm.acknowledged_at))}` })
        : null,
      !acked && ROLE_RANK[role] >= ROLE_RANK.operator
        ? el("button", { type: "button", className: "ack", text: "acknowledge",
          on: { click: () => ack(id) } })
        : null);
  }

  async function reload() {
    if (loading) return;
    loading = true;
    try {
      const list = await hub.api("/api/alarms?state=active");
      const alarms = (Array.isArray(list) ? list : []).filter(hub.isObject).slice(0, MAX_ALARMS);
      showError("#alarms-error", "");
      $("#alarms").replaceChildren(...alarms.map(alarmRow));
      $("#no-alarms").hidden = alarms.length > 0;
      $("#alarm-count").textContent = alarms.length ? `(${alarms.length})` : "";
    } catch (err) {
      showError("#alarms-error", `could not list alarms: ${err.message}`);
    } finally {
      loading = false;
    }
    if (ROLE_RANK[role] >= ROLE_RANK.admin) await loadRules();
  }

  async function ack(id) {
    try {
      await hub.api(`/api/alarms/${encodeURIComponent(id)}/ack`, { method: "POST" });
      showError("#alarms-error", "");
    } catch (err) {
      showError("#alarms-error", `could not acknowledge: ${err.message}`);
    }
    await reload();
  }

  // --- rules (admin) ------------------------------------------------------------------------------
  function describeScope(scope) {
    if (!hub.isObject(scope)) return "?";
    if (typeof scope.device === "string") return `device ${hub.text(scope.device, 64)}`;
    if (typeof scope.board === "string") return `board ${hub.text(scope.board, 64)}`;
    return "whole fleet";
  }

  function ruleRow(rule) {
    const id = hub.text(String(rule.id), 40) || "?";
    const sensor = hub.text(rule.sensor, 64);
    const parts = [
      hub.text(rule.kind, 32) || "?",
      sensor ? `sensor ${sensor}` : null,
      `threshold ${hub.number(rule.threshold) ?? "?"}`,
      hub.number(rule.for_s) ? `for ${hub.number(rule.for_s)} s` : null,
      hub.number(rule.clear_hysteresis) ? `hysteresis ${hub.number(rule.clear_hysteresis)}` : null,
      rule.enabled === false ? "disabled" : null,
    ].filter(Boolean);
    return el("li", { dataset: { rule: id } },
      el("b", { className: "name", text: hub.text(rule.name, 64) || id }),
      ` · ${describeScope(rule.scope)} · ${parts.join(" · ")} `,
      el("button", { type: "button", className: "remove-rule danger", text: "remove",
        on: { click: () => removeRule(id) } }));
  }

  async function loadRules() {
    try {
      const list = await hub.api("/api/alarms/rules");
      const rules = (Array.isArray(list) ? list : []).filter(hub.isObject).slice(0, 500);
      $("#rules").replaceChildren(...rules.map(ruleRow));
    } catch (err) {
      showError("#rules-error", `could not list rules: ${err.message}`);
    }
  }

  function optionalNumber(selector) {
    const text = $(selector).value.trim();
    return text === "" ? undefined : Number(text);
  }

  async function addRule(event) {
    event.preventDefault();
    const scopeKind = $("#rule-scope").value;
    const target = $("#rule-target").value.trim();
    if (scopeKind !== "fleet" && !target) {
      showError("#rules-error", `name the ${scopeKind} the rule is for`);
      return;
    }
    const kind = $("#rule-kind").value;
    const rule = {
      name: $("#rule-name").value.trim(),
      scope: scopeKind === "fleet" ? { fleet: true } : { [scopeKind]: target },
      kind,
      threshold: Number($("#rule-threshold").value),
      for_s: optionalNumber("#rule-for"),
      clear_hysteresis: optionalNumber("#rule-hysteresis"),
    };
    if (kind === "above" || kind === "below") rule.sensor = $("#rule-sensor").value.trim();
    try {
      await hub.api("/api/alarms/rules", { method: "POST", body: rule });
      showError("#rules-error", "");
      $("#rule-form").reset();
    } catch (err) {
      showError("#rules-error", `could not add the rule: ${err.message}`);
    }
    await reload();
    onChange();
  }

  async function removeRule(id) {
    try {
      await hub.api(`/api/alarms/rules/${encodeURIComponent(id)}`, { method: "DELETE" });
      showError("#rules-error", "");
    } catch (err) {
      showError("#rules-error", `could not remove the rule: ${err.message}`);
    }
    await reload();
  }

  function init(userRole, changed) {
    role = userRole;
    onChange = changed;
    if (ROLE_RANK[role] < ROLE_RANK.operator) {
      // The hub lists alarms to operators and admins; a viewer sees them as the fleet's
      // "alarm" count and filter.
      $("#alarms").remove();
      $("#no-alarms").textContent = "Alarmed devices are marked in the fleet (the alarm filter).";
      $("#rules-admin").remove();
      return;
    }
    if (ROLE_RANK[role] >= ROLE_RANK.admin) {
      $("#rules-admin").hidden = false;
      $("#rule-form").addEventListener("submit", addRule);
    } else {
      $("#rules-admin").remove();
    }
    reload();
    setInterval(() => {
      if (!document.hidden) reload();
    }, 10000);
  }

  return { init, reload };
})();
