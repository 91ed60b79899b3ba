// The runs table: filters, keyset paging, live over the /v1/events feed.
import * as api from "../api.js";
import { stream } from "../sse.js";
import { h, badge, progressBar, ago, duration, paramsSummary, debounce, inOrder, ACTIVE, shown, visible } from "../util.js";

const STATES = ["", "queued", "running", "succeeded", "failed", "cancelled", "timed_out"];
const PAGE = 50;

export async function runsPage(ctx) {
  const q = ctx.query;
  const filters = { job: q.get("job") || "", state: q.get("state") || "", label: q.get("label") || "", batch: q.get("batch") || "" };
  const cursors = q.get("cursor") ? [q.get("cursor")] : [];
  const jobs = await api.get("/v1/jobs").catch(() => ({ jobs: [] }));
  const rows = new Map(); // run id -> { tr, run }
  const tbody = h("tbody");
  const status = h("span", { class: "muted", id: "runs-status" });
  const older = h("button", { type: "button", class: "ghost", id: "older" }, "Older →");
  const newer = h("button", { type: "button", class: "ghost", id: "newer" }, "← Newer");
  let nextCursor = null;

  const form = h("form", { class: "filters", id: "run-filters" },
    h("label", {}, "Job ", h("select", { name: "job" }, h("option", { value: "" }, "any"),
      (jobs.jobs || []).map((j) => h("option", { value: j.name, selected: j.name === filters.job }, visible(j.name))))),
    h("label", {}, "State ", h("select", { name: "state" },
      STATES.map((s) => h("option", { value: s, selected: s === filters.state }, s || "any")))),
    h("label", {}, "Label ", h("input", { name: "label", placeholder: "key=value", value: filters.label, size: 14 })),
    h("label", {}, "Batch ", h("input", { name: "batch", placeholder: "batch id", value: filters.batch, size: 14 })),
    h("button", { type: "submit" }, "Filter"));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const data = Object.fromEntries(new FormData(form));
    location.hash = `#/runs${api.qs(data)}`;
  });
  form.addEventListener("change", (e) => { if (e.target.tagName === "SELECT") form.requestSubmit(); });

  ctx.main.append(
    h("div", { class: "page-head" }, h("h1", {}, "Runs"), h("a", { class: "button", href: "#/jobs" }, "New run")),
    form,
    h("table", { class: "runs" },
      h("thead", {}, h("tr", {}, ["Run", "Job", "State", "Params", "Progress", "Created", "Duration"].map((t) => h("th", {}, t)))),
      tbody),
    h("div", { class: "pager" }, newer, status, older),
  );

  function row(run) {
    const tr = h("tr", { dataset: { id: run.id, state: run.state } },
      h("td", {}, h("a", { href: `#/runs/${run.id}`, class: "mono" }, run.id.slice(-10))),
      h("td", {}, shown(run.job)),
      h("td", { class: "state" }, badge(run.state)),
      h("td", { class: "params mono" }, paramsSummary(run.params)),
      h("td", { class: "prog" }, progressBar(run.progress, run.state),
        h("span", { class: "muted small" }, shown((run.progress && run.progress.message) || ""))),
      h("td", { title: run.created_at }, ago(run.created_at)),
      h("td", { class: "dur" }, duration(run.started_at, run.finished_at)));
    return tr;
  }

  const reads = inOrder(); // a page for filters typed over must not replace the newer one's
  async function load() {
    const params = { ...filters, limit: PAGE, cursor: cursors[cursors.length - 1] };
    if (params.label) params.label = [params.label];
    const n = reads.ask();
    let page;
    try {
      page = await api.get(`/v1/runs${api.qs(params)}`);
    } catch (err) {
      if (reads.fresh(n)) status.textContent = visible(err.message);
      return;
    }
    if (!reads.fresh(n)) return;
    rows.clear();
    tbody.replaceChildren(...page.runs.map((run) => { const tr = row(run); rows.set(run.id, { tr, run }); return tr; }));
    if (!page.runs.length) tbody.append(h("tr", {}, h("td", { colspan: 7, class: "empty" }, "No runs match.")));
    nextCursor = page.next_cursor;
    older.disabled = !nextCursor;
    newer.disabled = cursors.length === 0;
    status.textContent = `${page.runs.length} runs${cursors.length ? ` · page ${cursors.length + 1}` : ""}`;
  }

  older.addEventListener("click", () => { if (nextCursor) { cursors.push(nextCursor); load(); } });
  newer.addEventListener("click", () => { cursors.pop(); load(); });

  // The first page follows new runs; later pages only update the rows they show.
  const reload = debounce(() => { if (cursors.length === 0) load(); }, 250);
  const header = debounce(ctx.refreshHeader, 250);
  const matches = (data) => (!filters.job || data.job === filters.job) && !filters.label && !filters.batch;

  function update(id, changes) {
    const entry = rows.get(id);
    if (!entry) return false;
    Object.assign(entry.run, changes);
    const tr = row(entry.run);
    entry.tr.replaceWith(tr);
    entry.tr = tr;
    return true;
  }

  await load();
  const feed = stream("/v1/events", (type, data) => {
    if (type === "ready") { load(); return; } // (re)connected: re-read the list, the truth
    if (type === "lagged") { load(); return; }
    const d = JSON.parse(data);
    if (type === "progress") { update(d.id, { progress: d.progress }); return; }
    header();
    if (type === "run") {
      const shown = rows.get(d.id);
      if (shown && (!filters.state || filters.state === d.state)) {
        const changes = { state: d.state };
        const now = new Date().toISOString();
        if (d.state === "running" && !shown.run.started_at) changes.started_at = now;
        if (!ACTIVE.has(d.state)) changes.finished_at = now;
        update(d.id, changes);
        api.get(`/v1/runs/${d.id}`).then((run) => update(d.id, run)).catch(() => {});
      } else if (shown || (matches(d) && (!filters.state || filters.state === d.state))) {
        reload();
      }
    } else if (type === "submitted" || type === "batch" || type === "deleted") {
      if (type === "deleted" || matches(d)) reload();
    }
  });
  // durations of running rows keep counting
  const ticker = setInterval(() => {
    for (const { tr, run } of rows.values()) {
      if (run.state === "running") tr.querySelector(".dur").textContent = duration(run.started_at, null);
    }
  }, 1000);
  return { dispose() { feed.close(); clearInterval(ticker); } };
}
