// Small DOM and formatting helpers shared by the pages.
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    // through the CSSOM: the page's CSP forbids style attributes
    else if (k === "style") Object.assign(el.style, v);
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k in el && typeof v !== "string") el[k] = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export const ACTIVE = new Set(["queued", "running"]);

export function badge(state) {
  return h("span", { class: `badge state-${state}`, dataset: { state } }, state);
}

export function progressBar(progress, state) {
  const frac = progress && typeof progress.fraction === "number"
    ? Math.max(0, Math.min(1, progress.fraction)) : (state === "succeeded" ? 1 : 0);
  const bar = h("div", { class: "progress", role: "progressbar", "aria-valuemin": "0",
    "aria-valuemax": "100", "aria-valuenow": String(Math.round(frac * 100)) },
  h("div", { class: `fill state-${state || "none"}`, style: { width: `${(frac * 100).toFixed(1)}%` } }));
  return bar;
}

export function setProgress(bar, progress, state) {
  bar.replaceWith(progressBar(progress, state));
}

export function ago(iso) {
  if (!iso) return "";
  const s = (Date.now() - Date.parse(iso)) / 1000;
  if (s < 60) return `${Math.max(0, Math.round(s))}s ago`;
  if (s < 3600) return `${Math.round(s / 60)}m ago`;
  if (s < 86400) return `${Math.round(s / 3600)}h ago`;
  return `${Math.round(s / 86400)}d ago`;
}

export function duration(start, end) {
  if (!start) return "";
  const s = ((end ? Date.parse(end) : Date.now()) - Date.parse(start)) / 1000;
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 120) return `${s.toFixed(1)} s`;
  if (s < 7200) return `${Math.floor(s / 60)}m ${Math.round(s % 60)}s`;
  return `${Math.floor(s / 3600)}h ${Math.round((s % 3600) / 60)}m`;
}

export function bytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 ** 2) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 ** 3) return `${(n / 1024 ** 2).toFixed(1)} MiB`;
  return `${(n / 1024 ** 3).toFixed(1)} GiB`;
}

export function paramsSummary(params) {
  const text = Object.entries(params || {}).map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`).join(" ");
  return text.length > 80 ? `${text.slice(0, 79)}…` : text;
}

// Reads answered out of the order they were asked in (a read of a running run first reads
// its progress; a filter typed on while the last page loads): each answer is applied only if
// no answer asked after it has been applied already. `ask()` numbers a read; `fresh(n)` says
// whether its answer may be applied (and from then on, that no older one may).
export function inOrder() {
  let asked = 0;
  let applied = 0;
  return {
    ask: () => ++asked,
    fresh: (n) => { if (n < applied) return false; applied = n; return true; },
  };
}

export function debounce(fn, ms) {
  let t = null;
  return (...args) => { clearTimeout(t); t = setTimeout(() => fn(...args), ms); };
}

export function errorBox(err) {
  return h("div", { class: "error", role: "alert" }, err.message || String(err));
}

// Encode each path segment (artifact paths keep their slashes).
export const encodePath = (p) => p.split("/").map(encodeURIComponent).join("/");

// A program's text as shown: the bidi controls that would reorder it (a name shown as
// "exe.png" that is "gnp.exe" backwards) and other control characters written as \uXXXX.
// eslint-disable-next-line no-control-regex
const ACTS = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;
export const visible = (text) => String(text).replace(ACTS, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
