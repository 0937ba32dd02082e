// What every console page shares: DOM building without markup, the session (who is logged in,
// the CSRF token, logout), JSON API calls (a 401 goes to /login), the MQTT token from /api/hub
// (kept in memory only and renewed before it expires) and the topic templates it names.
"use strict";

const hub = (() => {
  const RENEW_MARGIN_S = 60; // ask for a fresh MQTT token this long before the old one expires
  const MIN_RENEW_S = 5;

  // --- DOM: data never becomes markup ---------------------------------------------------------
  // el("li", {className: "x", dataset: {device: id}, text: "..."}, child, "text", ...)
  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props)) {
      if (value === undefined || value === null) continue;
      if (/^on.|^style$|^srcdoc$/i.test(key)) throw new Error(`el: refusing attribute ${key}`);
      if (key === "text") node.textContent = String(value);
      else if (key === "className") node.className = value;
      else if (key === "dataset") Object.assign(node.dataset, value);
      else if (key === "on") {
        for (const [kind, handler] of Object.entries(value)) node.addEventListener(kind, handler);
      } else if (key === "href") node.setAttribute("href", safeHref(value));
      else if (key in node && typeof value !== "string") node[key] = value; // disabled, hidden...
      else node.setAttribute(key, String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  // Puts nodes into a list in order, moving only what is out of place: an unchanged list is not
  // touched, so the browser has nothing to lay out again.
  function syncChildren(list, nodes) {
    let i = 0;
    for (const node of nodes) {
      const at = list.children[i];
      if (at !== node) list.insertBefore(node, at || null);
      i += 1;
    }
    while (list.children.length > i) list.lastElementChild.remove();
  }

  // Links the pages make point at the hub itself or at a blob the page made; anything else
  // (javascript:, data:, another site) becomes a harmless "#".
  function safeHref(value) {
    const text = String(value);
    try {
      const url = new URL(text, location.href);
      if (url.protocol === "blob:" && text.startsWith("blob:")) return text;
      if (url.origin === location.origin && (url.protocol === "http:" || url.protocol === "https:")) {
        return url.pathname + url.search + url.hash;
      }
    } catch (err) {
      /* not a URL */
    }
    return "#";
  }

  // --- values from devices and clients: validated before use -----------------------------------
  const MAX_TEXT = 200;

  function text(value, max = MAX_TEXT) {
    if (typeof value !== "string") return null;
    return value.length > max ? `${value.slice(0, max)}…` : value;
  }

  function integer(value) {
    return typeof value === "number" && Number.isFinite(value) ? Math.round(value) : null;
  }

  function number(value) {
    return typeof value === "number" && Number.isFinite(value) ? value : null;
  }

  function parseJson(payload) {
    try {
      return JSON.parse(payload);
    } catch (err) {
      return undefined;
    }
  }

  function isObject(value) {
    return typeof value === "object" && value !== null && !Array.isArray(value);
  }

  // --- HTTP API ---------------------------------------------------------------------------------
  // skew: the hub's clock minus ours (ms), from the Date header of its last answer; a token's
  // expiry is the hub's time, and the browser's clock may be minutes off.
  const state = { session: null, info: null, renewTimer: null, onToken: [], skew: 0,
    renewedAt: 0 };

  function toLogin() {
    const next = location.pathname + location.search;
    location.assign(`/login?next=${encodeURIComponent(next)}`);
    return new Promise(() => {}); // the page is leaving; nothing after this runs
  }

  class ApiError extends Error {
    constructor(message, status, body) {
      super(message);
      this.status = status;
      this.body = body;
    }
  }

  async function api(path, { method = "GET", body, redirect = true } = {}) {
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (method !== "GET" && method !== "HEAD" && state.session) {
      headers["X-CSRF-Token"] = state.session.csrf;
    }
    let response;
    try {
      response = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        credentials: "same-origin",
        cache: "no-store",
      });
    } catch (err) {
      throw new ApiError(`the hub did not answer (${err.message})`, 0, null);
    }
    const date = Date.parse(response.headers.get("Date") || "");
    // The Date header has whole seconds: a skew under 2 s is noise, not a wrong clock.
    if (Number.isFinite(date)) {
      const skew = date + 500 - Date.now();
      state.skew = Math.abs(skew) < 2000 ? 0 : skew;
    }
    if (response.status === 401 && redirect) return toLogin();
    if (response.status === 204) return null;
    const answer = await response.json().catch(() => null);
    if (!response.ok) {
      const message = isObject(answer) && typeof answer.error === "string"
        ? answer.error
        : `HTTP ${response.status}`;
      throw new ApiError(message, response.status, answer);
    }
    return answer;
  }

  // --- session and MQTT token -------------------------------------------------------------------
  // Returns {session, info}: session is null in the hub's opt-in public view (no login).
  async function start() {
    const session = await api("/api/session", { redirect: false }).catch((err) => {
      if (err.status === 401) return null;
      throw err;
    });
    state.session = session;
    const info = await api("/api/hub");
    acceptInfo(info);
    return { session, info };
  }

  function acceptInfo(info) {
    if (!isObject(info) || typeof info.token !== "string") {
      throw new ApiError("the hub sent no MQTT token", 0, info);
    }
    state.info = info;
    clearTimeout(state.renewTimer);
    const expires = number(info.token_expires);
    const left = expires === null ? 600 : expires - (Date.now() + state.skew) / 1000;
    const wait = Math.max(MIN_RENEW_S, Math.min(left - RENEW_MARGIN_S, left * 0.8));
    state.renewTimer = setTimeout(renew, wait * 1000);
  }

  // A refused MQTT login (say, after the computer slept past the token's expiry) asks for a
  // fresh token at once, but at most every 30 s.
  function renewNow() {
    if (Date.now() - state.renewedAt < 30000) return;
    clearTimeout(state.renewTimer);
    renew();
  }

  async function renew() {
    state.renewedAt = Date.now();
    try {
      acceptInfo(await api("/api/hub"));
      for (const listener of state.onToken) listener(state.info);
    } catch (err) {
      console.warn("could not renew the MQTT token:", err.message);
      state.renewTimer = setTimeout(renew, MIN_RENEW_S * 1000);
    }
  }

  function onToken(listener) {
    state.onToken.push(listener);
  }

  function wsUrl(info) {
    const path = typeof info.ws_path === "string" && info.ws_path.startsWith("/") ? info.ws_path : "/mqtt";
    return `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${path}`;
  }

  async function logout() {
    try {
      await api("/api/logout", { method: "POST", redirect: false });
    } catch (err) {
      if (err.status !== 401) throw err;
    }
    clearTimeout(state.renewTimer);
    location.assign("/login");
  }

  // Fills the header's "who" badge and the logout button (or a login link in the public view).
  function showUser(session) {
    const who = document.getElementById("who");
    const logoutButton = document.getElementById("logout");
    const login = document.getElementById("login-link");
    if (session) {
      who.textContent = `${session.name} · ${session.role}`;
      who.dataset.role = session.role;
      logoutButton.hidden = false;
      login.hidden = true;
      logoutButton.addEventListener("click", () => {
        logoutButton.disabled = true;
        logout().catch((err) => {
          logoutButton.disabled = false;
          who.textContent = `logout failed: ${err.message}`;
        });
      });
    } else {
      who.textContent = "public view";
      who.dataset.role = "viewer";
      logoutButton.hidden = true;
      login.hidden = false;
      login.setAttribute("href", `/login?next=${encodeURIComponent(location.pathname)}`);
    }
  }

  // --- topics: the hub's templates, never spelt out here -----------------------------------------
  // "d/{device}/t/{sensor}" -> filter "d/+/t/+" and a matcher giving {device, sensor}.
  function topicFilter(template) {
    return template
      .split("/")
      .map((level) => (/^\{\w+\}$/.test(level) ? "+" : level))
      .join("/");
  }

  function topicMatcher(template) {
    const levels = template.split("/");
    return (topic) => {
      const parts = topic.split("/");
      if (levels[levels.length - 1] === "#") {
        if (parts.length < levels.length - 1) return null;
      } else if (parts.length !== levels.length) {
        return null;
      }
      const out = {};
      for (let i = 0; i < levels.length; i++) {
        const level = levels[i];
        if (level === "#") return out;
        const name = /^\{(\w+)\}$/.exec(level);
        if (name) {
          if (!parts[i]) return null;
          out[name[1]] = parts[i];
        } else if (level !== parts[i]) {
          return null;
        }
      }
      return out;
    };
  }

  // A script of the hub's, loaded when a page first needs it (the fleet page draws its first
  // rows before it parses MQTT.js, 340 KB). Resolves once it has run.
  const loading = new Map();
  function loadScript(src) {
    if (!loading.has(src)) {
      loading.set(src, new Promise((resolve, reject) => {
        const script = el("script", { src });
        script.addEventListener("load", resolve);
        script.addEventListener("error", () => reject(new Error(`could not load ${src}`)));
        document.head.append(script);
      }));
    }
    return loading.get(src);
  }

  // MQTT.js options every page uses: no worker timers (they need a blob: worker, which the
  // console's Content-Security-Policy does not allow).
  function mqttOptions(extra) {
    return { protocolVersion: 4, timerVariant: "native", ...extra };
  }

  // --- device facts shared by the fleet and device pages ------------------------------------
  // Health fields by type (README, "Topic contract"); anything else a device sends is ignored.
  const HEALTH_TEXT = ["fw", "board", "reset", "boot", "error"];
  const HEALTH_INT = ["up", "heap", "rssi", "reconnects", "queue", "dropped", "seq"];

  function cleanHealth(raw) {
    if (!isObject(raw)) return null;
    const out = {};
    for (const key of HEALTH_TEXT) out[key] = text(raw[key]);
    for (const key of HEALTH_INT) out[key] = integer(raw[key]);
    // Units per sensor, if the device describes them: {"temp": "°C"} (short strings only).
    out.units = {};
    if (isObject(raw.units)) {
      for (const [sensor, unit] of Object.entries(raw.units).slice(0, 32)) {
        const u = text(unit, 16);
        if (u) out.units[text(sensor, 64)] = u;
      }
    }
    return out;
  }

  function cleanStatus(raw) {
    return typeof raw === "string" && raw ? text(raw, 32) : null;
  }

  // "12 s ago", "5 min ago", "3 h ago", "2 d ago"; "never" for null.
  function ago(seconds) {
    if (!seconds) return "never";
    const s = Math.max(0, Math.round((Date.now() + state.skew) / 1000 - seconds));
    if (s < 60) return `${s} s ago`;
    if (s < 3600) return `${Math.round(s / 60)} min ago`;
    return s < 172800 ? `${Math.round(s / 3600)} h ago` : `${Math.round(s / 86400)} d ago`;
  }

  // A hub time (Unix seconds) as local date and time, or "—".
  function when(seconds) {
    const value = number(seconds);
    return value === null ? "—" : new Date(value * 1000).toLocaleString();
  }

  // --- admin lists (devices.js, users.js) -----------------------------------------------------
  // An admin panel's actions: each clears the panel's error line, runs, shows what went wrong
  // as text, then reloads the list.
  function adminPanel(errorSelector, reload) {
    const showError = (message) => {
      const box = document.querySelector(errorSelector);
      box.hidden = !message;
      box.textContent = message || "";
    };
    async function act(work) {
      showError("");
      try {
        await work();
      } catch (err) {
        showError(err.message);
      }
      await reload();
    }
    return { showError, act };
  }

  function button(label, className, handler) {
    return el("button", { type: "button", className, text: label, on: { click: handler } });
  }

  // A list row's name and its enabled/disabled badge (extra spans between them).
  function enabledRow(name, enabled, ...extra) {
    return el("div", { className: "row" },
      el("span", { className: "name", text: name }), ...extra,
      el("span", {
        className: `badge state ${enabled ? "online" : "offline"}`,
        text: enabled ? "enabled" : "disabled",
      }));
  }

  // The actions of a row whose removal waits for a confirmation.
  function confirmRemove(name, remove, cancel) {
    return [
      el("span", { className: "bad", text: `remove ${name} for good?` }),
      button("yes, remove", "confirm-remove danger", remove),
      button("cancel", "cancel-remove", cancel),
    ];
  }

  // [[key, value], ...] -> <dt>key</dt><dd data-field=key>value</dd>... (a one-time secret).
  function fieldList(fields) {
    return fields.flatMap(([key, value]) => [
      el("dt", { text: key }),
      el("dd", { dataset: { field: key }, text: value }),
    ]);
  }

  // A named moment of the page's start (the console benchmark reads them: performance marks,
  // first occurrence only, so a page refresh every 10 s adds nothing).
  function mark(name) {
    if (performance.getEntriesByName(name, "mark").length === 0) performance.mark(name);
  }

  // The hub's clock now, in Unix seconds (the browser's clock may be off).
  function now() {
    return (Date.now() + state.skew) / 1000;
  }

  return {
    cleanHealth, cleanStatus, ago, when, now, mark,
    el, syncChildren, safeHref, text, integer, number, parseJson, isObject,
    api, ApiError, start, onToken, renewNow, wsUrl, logout, showUser, toLogin,
    topicFilter, topicMatcher, mqttOptions, loadScript,
    adminPanel, button, enabledRow, confirmRemove, fieldList,
    get session() { return state.session; },
    get info() { return state.info; },
  };
})();
