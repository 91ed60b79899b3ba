// The dashboard shell: routes on the URL hash, the capacity header, the token dialog.
import * as api from "./api.js";
import { h, debounce, marked, visible } from "./util.js";
import { runsPage } from "./pages/runs.js";
import { runPage } from "./pages/run.js";
import { jobsPage } from "./pages/jobs.js";
import { batchesPage } from "./pages/batches.js";
import { schedulesPage } from "./pages/schedules.js";

const main = document.getElementById("main");
const ROLES = { read: 1, submit: 2, admin: 3 };
export const session = { role: "read", auth: true, name: null };
export const can = (role) => (ROLES[session.role] || 0) >= ROLES[role];

let current = null; // the page on screen: { dispose() }

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "") || "runs";
  const [path, query = ""] = raw.split("?");
  return { parts: path.split("/").filter(Boolean).map(decodeURIComponent), query: new URLSearchParams(query) };
}

async function route() {
  if (current && current.dispose) current.dispose();
  current = null;
  main.replaceChildren();
  const { parts, query } = parseHash();
  const [section, id] = parts;
  document.querySelectorAll("[data-nav]").forEach((a) => a.classList.toggle("active", a.dataset.nav === section));
  const ctx = { main, query, can, session, refreshHeader };
  try {
    if (section === "runs" && id) current = await runPage(ctx, id);
    else if (section === "jobs") current = await jobsPage(ctx, id);
    else if (section === "batches") current = await batchesPage(ctx);
    else if (section === "schedules") current = await schedulesPage(ctx);
    else current = await runsPage(ctx);
  } catch (err) {
    main.replaceChildren(h("div", { class: "error", role: "alert" }, marked(err.message || String(err))));
  }
}

async function refreshHeader() {
  const el = document.getElementById("capacity");
  try {
    const res = await fetch("/health", { headers: { Accept: "application/json" } });
    const hl = await res.json();
    el.replaceChildren(...[
      h("span", { title: "running / capacity" }, h("b", { id: "hdr-running" }, hl.active), ` / ${hl.capacity} running`),
      h("span", {}, h("b", { id: "hdr-queued" }, hl.queued), " queued"),
      hl.draining ? h("span", { class: "warn" }, "draining") : null,
      hl.ready ? null : h("span", { class: "warn" }, "not ready"),
    ].filter(Boolean));
  } catch {
    el.textContent = "server unreachable";
  }
}

async function loadSession() {
  try {
    Object.assign(session, await api.get("/v1/me"));
    document.getElementById("token-who").textContent = session.auth
      ? `Signed in as ${visible(session.name)} (${visible(session.role)}).` : "This server needs no token (loopback only).";
    document.body.dataset.role = session.role;
    return true;
  } catch (err) {
    if (err.status === 401) return false;
    throw err;
  }
}

function tokenDialog() {
  const dialog = document.getElementById("token-dialog");
  const input = document.getElementById("token-input");
  document.getElementById("token-button").addEventListener("click", () => { input.value = api.token.get(); dialog.showModal(); });
  document.getElementById("token-forget").addEventListener("click", () => { api.token.set(""); input.value = ""; dialog.close(); start(); });
  document.getElementById("token-form").addEventListener("submit", () => { api.token.set(input.value.trim()); start(); });
  api.onUnauthorized(debounce(() => { if (!dialog.open) dialog.showModal(); }, 50));
}

async function start() {
  if (!(await loadSession())) {
    main.replaceChildren(h("div", { class: "empty" }, "This server asks for a token: use the Token button."));
    document.getElementById("token-dialog").showModal();
    return;
  }
  await route();
}

tokenDialog();
window.addEventListener("hashchange", route);
refreshHeader();
// the header follows the queue: refreshed by pages on every change they hear of, and slowly
// on its own so an idle tab still shows the truth
setInterval(refreshHeader, 5000);
start();
