// A run's artifacts: download (fetched with the token, saved from a blob) and inline preview
// of text, CSV, JSON and images.
import * as api from "../api.js";
import { h, bytes, errorBox, encodePath, inOrder, visible, marked, shown } from "../util.js";

const PREVIEW_BYTES = 256 * 1024;
const MAX_PAGES = 100; // of 1,000 files each
const TEXT = /\.(txt|log|md|csv|tsv|json|jsonl|yaml|yml|toml|out|dat)$/i;
const IMAGE = /\.(png|jpe?g|gif|webp)$/i;

function csvTable(text) {
  const lines = text.split(/\r?\n/).filter(Boolean).slice(0, 200);
  const rows = lines.map((l) => l.split(","));
  return h("table", { class: "compact csv" },
    h("thead", {}, h("tr", {}, (rows[0] || []).map((c) => h("th", {}, shown(c))))),
    h("tbody", {}, rows.slice(1).map((r) => h("tr", {}, r.map((c) => h("td", {}, shown(c)))))));
}

// A fetched file saved by the browser (fetched with the token, so no plain link).
export function saveBlob(b, name) {
  const href = URL.createObjectURL(b);
  const a = h("a", { href, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(href), 10000);
}

export function artifactsView(runId) {
  const list = h("ul", { class: "artifacts", id: "artifacts" });
  const preview = h("div", { class: "preview", id: "preview" });
  const el = h("div", {}, list, preview);
  const url = (path) => `/v1/runs/${runId}/artifacts/${encodePath(path)}`;
  const objectUrls = [];

  async function download(path) {
    saveBlob(await api.blob(url(path)), path.split("/").pop());
  }

  async function show(item) {
    preview.replaceChildren(h("p", { class: "muted" }, "loading ", shown(item.path), "…"));
    try {
      if (IMAGE.test(item.path)) {
        const href = URL.createObjectURL(await api.blob(url(item.path)));
        objectUrls.push(href);
        preview.replaceChildren(h("h3", {}, shown(item.path)), h("img", { src: href, alt: visible(item.path) }));
        return;
      }
      const b = await api.blob(url(item.path), `bytes=0-${PREVIEW_BYTES - 1}`);
      let text = await b.text();
      let body;
      if (/\.json$/i.test(item.path)) {
        // api.parse: an integer past 2^53 is shown as written, not rounded
        try { text = JSON.stringify(api.parse(text), null, 2); } catch { /* show as it is */ }
        body = h("pre", { class: "mono" }, marked(text, true));
      } else if (/\.csv$/i.test(item.path)) body = csvTable(text);
      else body = h("pre", { class: "mono" }, marked(text, true));
      preview.replaceChildren(h("h3", {}, shown(item.path)), body);
      if (item.size > PREVIEW_BYTES) preview.append(h("p", { class: "muted" }, `first ${bytes(PREVIEW_BYTES)} of ${bytes(item.size)}`));
    } catch (err) { preview.replaceChildren(errorBox(err)); }
  }

  const reads = inOrder(); // the listing of the ended run must not be replaced by an older one
  async function load() {
    const n = reads.ask();
    const pages = [];
    try {
      // every page (a run may keep more files than one page lists), as far as MAX_PAGES
      let cursor = null;
      do {
        const page = await api.get(`/v1/runs/${runId}/artifacts${cursor ? `?cursor=${encodeURIComponent(cursor)}` : ""}`);
        pages.push(page);
        cursor = page.next_cursor;
      } while (cursor && pages.length < MAX_PAGES && reads.fresh(n));
    } catch (err) {
      if (reads.fresh(n)) list.replaceChildren(h("li", { class: "muted" }, err.status === 404 ? "none" : visible(err.message)));
      return;
    }
    if (!reads.fresh(n)) return;
    const found = pages.flatMap((p) => p.artifacts);
    // what the run declared and cannot be served is said, never left out in silence
    const skipped = pages.flatMap((p) => p.skipped.map((s) => h("li", { class: "muted skipped" },
      "not listed: ", h("bdi", { class: "mono" }, marked(s.path)), ` (${visible(s.reason)})`)));
    const omitted = pages.reduce((sum, p) => sum + p.skipped_omitted, 0);
    if (omitted) skipped.push(h("li", { class: "muted skipped" }, `not listed: ${omitted} more`));
    if (pages[pages.length - 1].next_cursor) skipped.push(h("li", { class: "muted" }, `the first ${found.length} files only`));
    if (!found.length && !skipped.length) { list.replaceChildren(h("li", { class: "muted" }, "none yet")); return; }
    list.replaceChildren(...found.map((item) => h("li", { dataset: { path: item.path } },
      h("bdi", { class: "mono path" }, marked(item.path)), h("span", { class: "muted small" }, bytes(item.size)),
      h("button", { type: "button", class: "ghost small download", onclick: () => download(item.path).catch((e) => preview.replaceChildren(errorBox(e))) }, "Download"),
      TEXT.test(item.path) || IMAGE.test(item.path)
        ? h("button", { type: "button", class: "ghost small preview-btn", onclick: () => show(item) }, "Preview") : null)), ...skipped);
  }

  return { el, load, dispose() { objectUrls.forEach((u) => URL.revokeObjectURL(u)); } };
}
