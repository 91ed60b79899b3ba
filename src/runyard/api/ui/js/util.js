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

// `k=v k=v`, at most `max` characters as shown: each key and value shown apart (a value
// cannot run into or turn around the next), cut whole codes only.
export function paramsSummary(params, max = 80) {
  const out = [];
  let room = max - 1; // one kept for the "…"
  const pieces = Object.entries(params || {}).flatMap(([k, v], i) =>
    [[i ? " " : ""], [k, true], ["="], [typeof v === "string" ? v : JSON.stringify(v), true]]);
  for (const [text, stored] of pieces) {
    let kept = "";
    let cut = false;
    for (const c of text) {
      const width = visible(c).length;
      if (width > room) { cut = true; break; }
      kept += c;
      room -= width;
    }
    out.push(stored ? shown(kept) : kept);
    if (cut) { out.push("…"); break; }
  }
  return out;
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
  // a server's detail may quote what it was sent
  return h("div", { class: "error", role: "alert" }, marked(err.message || String(err)));
}

// Encode each path segment (artifact paths keep their slashes).
export const encodePath = (p) => p.split("/").map(encodeURIComponent).join("/");

// Stored and program-made text as shown: what would act rather than show is written out as
// its code. The bidi controls reorder what follows them, even past the value's end (a name
// shown as "exe.png" that is "gnp.exe" backwards, a param that turns the next one around);
// C0 and C1 controls and the characters that take no room (zero-width, soft hyphen, word
// joiner, Hangul fillers, tags, a BOM) hide text; a line or paragraph separator, a newline
// or tab in one line fakes a break between values. ZWJ/ZWNJ and variation selectors stay:
// scripts and emoji need them. The same set the CLI writes out (cli/output.py), and more.
const INVISIBLE = "\\u00ad\\u061c\\u115f\\u1160\\u17b4\\u17b5\\u180e\\u200b\\u200e\\u200f\\u2028-\\u202e"
  + "\\u2060-\\u206f\\u3164\\ufeff\\uffa0\\ufff9-\\ufffb\\u{1d173}-\\u{1d17a}\\u{e0000}-\\u{e007f}\\ud800-\\udfff";
const ACTS = new RegExp(`[\\u0000-\\u001f\\u007f-\\u009f${INVISIBLE}]`, "gu");
// a block of lines (a log, a file) keeps what multi-line text holds: tab, LF and CR
// (bounds.TEXT_PATTERN), which a <pre> shows as what they are
const ACTS_IN_LINES = new RegExp(`[\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f\\u007f-\\u009f${INVISIBLE}]`, "gu");
const SHORT = { "\t": "\\t", "\n": "\\n", "\r": "\\r" };
const hex = (n, width) => n.toString(16).padStart(width, "0");
const code = (c) => {
  const n = c.codePointAt(0);
  return SHORT[c] || (n > 0xffff ? `\\U${hex(n, 8)}` : `\\u${hex(n, 4)}`);
};

// As a string: for what takes no markup (an attribute, a title, an <option>).
export const visible = (text, lines = false) => String(text).replace(lines ? ACTS_IN_LINES : ACTS, code);

// As nodes: each written-out code marked apart, so that it is not taken for a value's own
// backslash text (`\u202e` typed as six characters shows plain).
export function marked(text, lines = false) {
  const s = String(text);
  const re = lines ? ACTS_IN_LINES : ACTS;
  const out = [];
  let last = 0;
  re.lastIndex = 0;
  for (let m = re.exec(s); m; m = re.exec(s)) {
    if (m.index > last) out.push(s.slice(last, m.index));
    const n = m[0].codePointAt(0);
    out.push(h("span", { class: "esc", title: `U+${hex(n, 4).toUpperCase()}, written out` }, code(m[0])));
    last = re.lastIndex;
  }
  if (last < s.length) out.push(s.slice(last));
  return out;
}

// One value among other text: written out and isolated (<bdi>), so that even its strong
// right-to-left letters cannot pull the text around it into their order.
export const shown = (text) => h("bdi", {}, marked(text));

// JSON as text, each of its strings shown as a value.
export function jsonShown(value, indent) {
  const text = JSON.stringify(value, null, indent) ?? "";
  const out = [];
  let last = 0;
  for (const m of text.matchAll(/"(?:[^"\\]|\\.)*"/g)) {
    if (m.index > last) out.push(text.slice(last, m.index));
    out.push(shown(m[0]));
    last = m.index + m[0].length;
  }
  if (last < text.length) out.push(text.slice(last));
  return out;
}
