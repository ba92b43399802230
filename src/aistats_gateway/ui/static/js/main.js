// The dashboard's entry point: sign-in state, the hash router, the shell (navigation, sign-out).
//
// Routes: #/overview, #/batches[?status=&session=&q=&size=], #/batches/<id>[?line=], #/new. Each view is a function
// (ctx, params) → {el, dispose}; dispose closes the view's sockets and timers when the route changes.

import { Api, clearSession, savedSession } from "./api.js";
import { alertError, announce, replace } from "./dom.js";
import { renderBatches } from "./views/batches.js";
import { renderCreate } from "./views/create.js";
import { renderDetail } from "./views/detail.js";
import { renderOverview } from "./views/overview.js";
import { renderSignIn } from "./views/signin.js";

const main = document.getElementById("main");
const topbar = document.getElementById("topbar");
let current = null;
let api = null;

const ROUTES = [
  { pattern: /^\/overview$/, nav: "overview", render: renderOverview },
  { pattern: /^\/batches\/([A-Za-z0-9_-]+)$/, nav: "batches", render: renderDetail },
  { pattern: /^\/batches$/, nav: "batches", render: renderBatches },
  { pattern: /^\/new$/, nav: "new", render: renderCreate },
];

function parseHash() {
  const raw = window.location.hash.replace(/^#/, "") || "/batches";
  const [path, search] = raw.split("?");
  return { path, query: new URLSearchParams(search || "") };
}

export function navigate(hash) {
  if (window.location.hash === hash) route();
  else window.location.hash = hash;
}

function signOut(message) {
  if (message && !savedSession()) return; // several requests failing at once: say it once
  clearSession();
  api = null;
  if (message) alertError(message);
  route();
}

function showSignedIn(session) {
  topbar.hidden = false;
  document.getElementById("workspace-label").textContent = session.workspace ? `Workspace ${session.workspace}` : "";
}

function focusHeading() {
  const heading = main.querySelector("h1");
  if (heading) {
    heading.setAttribute("tabindex", "-1");
    heading.focus({ preventScroll: false });
  }
}

function route() {
  const { path, query } = parseHash();
  if (!path.startsWith("/")) return; // an in-page anchor such as #main, not a route
  if (current && current.dispose) current.dispose();
  current = null;
  const session = savedSession();
  if (!session) {
    topbar.hidden = true;
    api = null;
    current = renderSignIn({
      onSignedIn: () => { route(); announce("Signed in."); },
    });
    replace(main, current.el);
    document.title = "Sign in · AI Stats Gateway";
    focusHeading();
    return;
  }
  if (!api || api.key !== session.key) {
    api = new Api(session.key, () => signOut("The gateway rejected this API key; sign in again."));
  }
  showSignedIn(session);
  const match = ROUTES.map((r) => ({ r, m: r.pattern.exec(path) })).find((x) => x.m);
  if (!match) {
    navigate("#/batches");
    return;
  }
  for (const link of document.querySelectorAll("[data-nav]")) {
    if (link.dataset.nav === match.r.nav) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const ctx = { api, navigate, query, workspace: session.workspace };
  current = match.r.render(ctx, ...match.m.slice(1));
  replace(main, current.el);
  const heading = main.querySelector("h1");
  document.title = `${heading ? heading.textContent : "Dashboard"} · AI Stats Gateway`;
  focusHeading();
}

document.getElementById("sign-out").addEventListener("click", () => {
  signOut();
  announce("Signed out; the key was removed from this browser.");
});

document.getElementById("skip-link").addEventListener("click", (event) => {
  event.preventDefault();
  main.focus();
});

window.addEventListener("hashchange", route);
window.addEventListener("unhandledrejection", (event) => {
  const reason = event.reason;
  if (reason && reason.name === "AbortError") return;
  alertError(reason && reason.message ? reason.message : String(reason));
});
route();
