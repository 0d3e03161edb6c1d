// The console's shell: sign-in, the key's identity, hash routing, and the ready marker tests wait for.
import { api, forgetKey, keepKey, storedKey } from "/console/api.js";
import { clear, field, h } from "/console/ui.js";
import * as overview from "/console/page-overview.js";
import * as collections from "/console/page-collections.js";
import * as jobs from "/console/page-jobs.js";
import * as deadLetters from "/console/page-dead-letters.js";
import * as webhooks from "/console/page-webhooks.js";
import * as schedules from "/console/page-schedules.js";
import * as keys from "/console/page-keys.js";

const PAGES = {
  overview, collections, jobs, "dead-letters": deadLetters, webhooks, schedules, keys,
};
const RANK = { reader: 0, writer: 1, admin: 2 };
const main = document.getElementById("main");
let me = null;
let timers = [];
let generation = 0;

function stopTimers() {
  for (const t of timers) clearInterval(t);
  timers = [];
}

function signInForm(message) {
  const input = h("input", { type: "password", name: "key", autocomplete: "off", required: true, spellcheck: "false" });
  const error = h("p", { class: "error", role: "alert" }, message || "");
  const form = h("form", { class: "sign-in", "aria-label": "Sign in" },
    h("h1", {}, "Sign in"),
    h("p", {}, "Paste an API key. It is kept in this tab only (session storage) and sent as a bearer token."),
    field("API key", input),
    h("button", { type: "submit" }, "Sign in"),
    error);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      me = await api("GET", "/v1/me", undefined, input.value.trim());
    } catch (err) {
      error.textContent = err.status === 401 ? "That key is not valid." : `Sign-in failed: ${err.message}`;
      return;
    }
    keepKey(input.value.trim());
    input.value = "";
    showShell();
    route();
  });
  stopTimers();
  document.getElementById("nav").hidden = true;
  document.getElementById("sign-out").hidden = true;
  document.getElementById("who").textContent = "";
  clear(main, form);
  main.dataset.ready = "sign-in";
  input.focus();
}

function showShell() {
  const nav = document.getElementById("nav");
  nav.hidden = false;
  for (const link of nav.querySelectorAll("[data-role]")) {
    link.hidden = RANK[me.role] < RANK[link.dataset.role];
  }
  document.getElementById("who").textContent = `${me.tenant} · ${me.role}${me.name ? ` · ${me.name}` : ""}`;
  document.getElementById("sign-out").hidden = false;
}

async function route() {
  stopTimers();
  const gen = ++generation;
  const [name, ...rest] = (location.hash.replace(/^#\/?/, "").split("?")[0] || "overview").split("/");
  const page = PAGES[name] || overview;
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.getAttribute("href") === `#/${name}`) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  delete main.dataset.ready;
  const ctx = {
    me,
    canWrite: RANK[me.role] >= RANK.writer,
    isAdmin: me.role === "admin",
    args: rest.map(decodeURIComponent),
    every(ms, fn) { if (gen === generation) timers.push(setInterval(fn, ms)); },
    current() { return gen === generation; },
  };
  const root = h("div", { class: "page" });
  clear(main, root);
  try {
    await page.render(root, ctx);
  } catch (err) {
    if (err.status === 401) { forgetKey(); signInForm("The key is no longer valid; sign in again."); return; }
    root.append(h("p", { class: "error", role: "alert" }, `Could not load this page: ${err.message}`));
  }
  if (gen === generation) {
    // Milliseconds since this document's navigation began: what the page took to show its first data.
    main.dataset.readyMs = String(Math.round(performance.now()));
    main.dataset.ready = name || "overview";
  }
}

async function start() {
  document.getElementById("sign-out").addEventListener("click", () => {
    forgetKey();
    me = null;
    signInForm("Signed out.");
  });
  window.addEventListener("hashchange", () => { if (me) route(); });
  const key = storedKey();
  if (!key) { signInForm(); return; }
  try {
    me = await api("GET", "/v1/me");
  } catch (err) {
    forgetKey();
    signInForm(err.status === 401 ? "The stored key is no longer valid." : `Sign-in failed: ${err.message}`);
    return;
  }
  showShell();
  route();
}

start();
