// The login page: posts the name and password to /api/login and goes on to `next` (a path on
// this hub only); a wrong password or a throttled login is shown as text, with the wait.
"use strict";

(() => {
  const $ = (selector) => document.querySelector(selector);

  // Only a path on this hub: "//other.site" or "/\other.site" would leave it.
  function nextPath() {
    const next = new URLSearchParams(location.search).get("next") || "/";
    if (!next.startsWith("/") || next.startsWith("//") || next.startsWith("/\\")) return "/";
    try {
      const url = new URL(next, location.origin);
      return url.origin === location.origin ? url.pathname + url.search + url.hash : "/";
    } catch (err) {
      return "/";
    }
  }

  function showError(text) {
    $("#error").hidden = !text;
    $("#error").textContent = text || "";
  }

  let waitTimer = null;

  function throttled(seconds) {
    let left = Math.max(1, Math.ceil(seconds));
    $("#login").disabled = true;
    clearInterval(waitTimer);
    const tick = () => {
      if (left <= 0) {
        clearInterval(waitTimer);
        $("#login").disabled = false;
        showError("You may try again now.");
        return;
      }
      showError(`Too many attempts: try again in ${left} s.`);
      left -= 1;
    };
    tick();
    waitTimer = setInterval(tick, 1000);
  }

  $("#login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    showError("");
    $("#login").disabled = true;
    let response;
    try {
      response = await fetch("/api/login", {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify({ name: $("#name").value.trim(), password: $("#password").value }),
        credentials: "same-origin",
        cache: "no-store",
      });
    } catch (err) {
      $("#login").disabled = false;
      showError(`The hub did not answer (${err.message}).`);
      return;
    }
    const body = await response.json().catch(() => ({}));
    const message = body && typeof body.error === "string" ? body.error : `HTTP ${response.status}`;
    if (response.ok) {
      $("#password").value = "";
      location.replace(nextPath());
      return;
    }
    $("#password").value = "";
    if (response.status === 429) {
      const retry = Number(body.retry_after ?? response.headers.get("Retry-After"));
      throttled(Number.isFinite(retry) ? retry : 60);
      return;
    }
    $("#login").disabled = false;
    showError(message);
    $("#password").focus();
  });

  // Already logged in: go straight on.
  fetch("/api/session", { credentials: "same-origin", cache: "no-store" })
    .then((response) => {
      if (response.ok) location.replace(nextPath());
    })
    .catch(() => {});
})();
