// Batches: counts by state, a bar of how far each is, cancel; kept current by the feed.
import * as api from "../api.js";
import { stream } from "../sse.js";
import { h, ago, debounce, errorBox, shown } from "../util.js";

const ORDER = ["queued", "running", "succeeded", "failed", "cancelled", "timed_out"];

export async function batchesPage(ctx) {
  const tbody = h("tbody");
  const msg = h("div", { role: "status" });
  const more = h("button", { type: "button", class: "ghost", id: "more-batches" }, "Older →");
  const cursors = [];
  let next = null;

  function row(b) {
    const stacked = h("div", { class: "stacked" }, ORDER.filter((s) => b.counts[s]).map((s) =>
      h("div", { class: `fill state-${s}`, title: `${b.counts[s]} ${s}`, style: { width: `${(100 * b.counts[s]) / b.size}%` } })));
    return h("tr", { dataset: { id: b.id } },
      h("td", {}, h("a", { class: "mono", href: `#/runs?batch=${b.id}` }, b.id.slice(-10))),
      h("td", {}, shown(b.job)), h("td", {}, b.size), h("td", { class: "wide" }, stacked),
      h("td", { class: "small" }, ORDER.filter((s) => b.counts[s]).map((s) => `${b.counts[s]} ${s}`).join(", ")),
      h("td", { title: b.created_at }, ago(b.created_at)),
      h("td", {}, !b.done && ctx.can("submit") ? h("button", { type: "button", class: "danger small", onclick: async () => {
        try { await api.post(`/v1/batches/${b.id}/cancel`); load(); } catch (err) { msg.replaceChildren(errorBox(err)); }
      } }, "Cancel") : (b.done ? "done" : "")));
  }

  async function load() {
    try {
      const page = await api.get(`/v1/batches${api.qs({ cursor: cursors[cursors.length - 1], limit: 20 })}`);
      tbody.replaceChildren(...page.batches.map(row));
      if (!page.batches.length) tbody.append(h("tr", {}, h("td", { colspan: 7, class: "empty" }, "No batches yet. POST /v1/batches or `runyard batch` makes one.")));
      next = page.next_cursor;
      more.disabled = !next;
    } catch (err) { msg.replaceChildren(errorBox(err)); }
  }
  more.addEventListener("click", () => { if (next) { cursors.push(next); load(); } });

  ctx.main.append(h("div", { class: "page-head" }, h("h1", {}, "Batches")), msg,
    h("table", { class: "runs" }, h("thead", {}, h("tr", {}, ["Batch", "Job", "Size", "Progress", "Counts", "Created", ""].map((t) => h("th", {}, t)))), tbody),
    h("div", { class: "pager" }, more));
  await load();
  const refresh = debounce(load, 500);
  const feed = stream("/v1/events", (type) => { if (type !== "progress") refresh(); });
  return { dispose() { feed.close(); } };
}
