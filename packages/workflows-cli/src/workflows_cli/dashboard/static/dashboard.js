// The dashboard's only script: live regions, confirmations, and a JSON check on the signal
// form. Pages work without it (forms post, links go); it adds no markup from data, only
// HTML the server rendered and escaped.
"use strict";

const LIVE_EVERY_MS = 2000;

function refresh(region) {
  if (document.hidden) return Promise.resolve();
  // Not while someone is about to act inside it: the form would vanish under them.
  if (region.contains(document.activeElement) && document.activeElement !== document.body) {
    return Promise.resolve();
  }
  return fetch(region.dataset.live, { headers: { "X-Live": "1" }, credentials: "same-origin" })
    .then((r) => (r.ok ? r.text() : null))
    .then((html) => {
      if (html !== null) {
        region.innerHTML = html;
        region.dataset.updated = String(Date.now());
        document.dispatchEvent(new CustomEvent("live-updated", { detail: region.id }));
      }
    })
    .catch(() => {});
}

function startLive() {
  for (const region of document.querySelectorAll("[data-live]")) {
    setInterval(() => refresh(region), LIVE_EVERY_MS);
  }
}

function confirmActions() {
  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (!(form instanceof HTMLFormElement)) return;
    const json = form.querySelector("[data-json]");
    if (json && json.value.trim() !== "") {
      try {
        JSON.parse(json.value);
      } catch (err) {
        event.preventDefault();
        const out = form.querySelector("[data-json-error]");
        if (out) out.textContent = "The payload is not JSON: " + err.message;
        return;
      }
    }
    const question = form.dataset.confirm;
    if (question && !window.confirm(question)) event.preventDefault();
  });
}

startLive();
confirmActions();
