// One run: state, attempts, live progress, live log, params, artifacts, cancel and resubmit.
import * as api from "../api.js";
import { stream } from "../sse.js";
import { h, badge, progressBar, duration, bytes, errorBox, inOrder, ACTIVE, shown, jsonShown } from "../util.js";
import { logView } from "./log.js";
import { artifactsView, saveBlob } from "./artifacts.js";

const UPLOAD = /^upload:([0-9a-f]{64})(?:\/(.+))?$/; // the name the run gave the file, if any

// The files the run was given (its file params): name, size, a download.
function inputsView(run) {
  const list = h("ul", { class: "artifacts", id: "inputs" });
  const el = h("section", { hidden: true }, h("h2", {}, "Inputs"), list);
  const files = Object.entries(run.params).filter(([, v]) => typeof v === "string" && UPLOAD.test(v));
  if (files.length) {
    el.hidden = false;
    for (const [name, value] of files) {
      const [, uploadId, given] = UPLOAD.exec(value);
      const item = h("li", { "data-param": name }, h("b", {}, shown(name)), " ", h("span", { class: "muted small" }, "…"));
      list.append(item);
      api.get(`/v1/uploads/${uploadId}`).then((u) => {
        const fileName = given ?? u.name; // as the program saw it
        const link = h("button", { type: "button", class: "ghost download" }, shown(fileName));
        link.addEventListener("click", async () => saveBlob(await api.blob(`/v1/uploads/${uploadId}/content`), fileName));
        item.replaceChildren(h("b", {}, shown(name)), " ", link, " ", h("span", { class: "muted small" }, bytes(u.size)));
      }, () => { item.replaceChildren(h("b", {}, shown(name)), " ", h("span", { class: "muted small" }, "no longer stored")); });
    }
  }
  return { el };
}

export async function runPage(ctx, id) {
  let run = await api.get(`/v1/runs/${encodeURIComponent(id)}`);
  const head = h("div", { class: "run-head" });
  const prog = h("div", { class: "run-progress" });
  const attempts = h("div", { class: "attempts" });
  const actionsMsg = h("div", { class: "action-msg", role: "status" });
  const log = logView(id, run);
  const artifacts = artifactsView(id);
  const inputs = inputsView(run);

  ctx.main.append(
    h("p", { class: "crumbs" }, h("a", { href: "#/runs" }, "Runs"), " / ", h("span", { class: "mono" }, shown(run.id))),
    head, actionsMsg, prog,
    h("div", { class: "columns" },
      h("section", { class: "log-panel" }, h("h2", {}, "Log"), log.el),
      h("aside", {},
        h("section", {}, h("h2", {}, "Params"), h("pre", { class: "params-json", id: "params" }, jsonShown(run.params, 2))),
        inputs.el,
        h("section", {}, h("h2", {}, "Attempts"), attempts),
        h("section", {}, h("h2", {}, "Artifacts"), artifacts.el))),
  );

  async function cancel() {
    try {
      await api.post(`/v1/runs/${id}/cancel`);
      actionsMsg.replaceChildren("Cancel requested.");
    } catch (err) { actionsMsg.replaceChildren(errorBox(err)); }
  }

  async function resubmit() {
    if (api.inexact(run.params)) {
      // sent back rounded, it would be another run's params, and accepted as such
      actionsMsg.replaceChildren(errorBox(new Error("this run's params hold numbers this browser cannot hold exactly: resubmit it with the CLI or the API")));
      return;
    }
    try {
      const body = { job: run.job, params: run.params, priority: run.priority, labels: run.labels };
      const created = await api.post("/v1/runs", body);
      location.hash = `#/runs/${created.id}`;
    } catch (err) { actionsMsg.replaceChildren(errorBox(err)); }
  }

  let deleted = false; // told by the feed: what is shown is what was last read

  function render() {
    const active = ACTIVE.has(run.state) && !deleted;
    head.replaceChildren(
      h("h1", {}, shown(run.job), " ", badge(run.state)),
      deleted ? h("p", { class: "notice", id: "run-deleted", role: "status" },
        "This run was deleted: what is shown is what was last read.") : null,
      h("div", { class: "meta" },
        h("span", {}, `created ${new Date(run.created_at).toLocaleString()}`),
        run.started_at ? h("span", {}, `ran ${duration(run.started_at, run.finished_at)}`) : null,
        run.exit_code !== null ? h("span", {}, `exit code ${run.exit_code}`) : null,
        run.reason && run.reason !== `exit code ${run.exit_code}` ? h("span", { class: "reason" }, shown(run.reason)) : null,
        run.batch_id ? h("a", { href: `#/runs?batch=${run.batch_id}` }, "batch") : null),
      h("div", { class: "actions" },
        active && ctx.can("submit") ? h("button", { type: "button", class: "danger", id: "cancel", onclick: cancel, disabled: run.cancel_requested }, run.cancel_requested ? "Cancelling…" : "Cancel") : null,
        ctx.can("submit") ? h("button", { type: "button", class: "ghost", id: "resubmit", onclick: resubmit }, "Resubmit") : null));
    const p = run.progress || {};
    prog.replaceChildren(progressBar(run.progress, run.state),
      h("span", { class: "progress-text", id: "progress-text" },
        typeof p.fraction === "number" ? `${Math.round(Math.min(1, Math.max(0, p.fraction)) * 100)}%` : "",
        typeof p.message === "string" && p.message ? [" · ", shown(p.message)] : ""));
    attempts.replaceChildren(h("table", { class: "compact" },
      h("thead", {}, h("tr", {}, ["#", "State", "Outcome", "Duration", "Peak RSS"].map((t) => h("th", {}, t)))),
      h("tbody", {}, (run.attempts || []).map((a) => h("tr", {},
        h("td", {}, a.number), h("td", {}, a.state),
        h("td", {}, a.outcome ? `${a.outcome}${a.exit_code !== null ? ` ${a.exit_code}` : ""}${a.signal ? ` sig ${a.signal}` : ""}` : ""),
        h("td", {}, duration(a.started_at, a.ended_at)),
        h("td", {}, a.peak_rss_kb ? bytes(a.peak_rss_kb * 1024) : ""))))));
  }

  // an older answer that comes last would put an ended run's page back to "running"
  const reads = inOrder();
  async function refresh() {
    const n = reads.ask();
    let got;
    try { got = await api.get(`/v1/runs/${id}`); } catch (err) {
      if (err instanceof api.ApiError && err.status === 404 && reads.fresh(n)) {
        deleted = true; // gone before the feed could say so
        render();
      }
      return;
    }
    if (!reads.fresh(n)) return;
    run = got;
    render();
    if (!ACTIVE.has(run.state)) artifacts.load();
    ctx.refreshHeader();
  }

  render();
  artifacts.load();
  log.start();
  const events = stream(`/v1/runs/${id}/events`, (type, data) => {
    if (type === "end" || type === "shutdown") { refresh(); return type !== "end"; }
    if (type === "lagged") return true; // resumes from the last id
    const ev = JSON.parse(data);
    if (type === "progress") {
      const { attempt, ...progress } = ev.data;
      run.progress = progress;
      render();
    } else {
      refresh();
    }
    return true;
  });
  // a run deleted while its page is open (its TTL, another user): the page kept showing it
  // as stored, buttons and all, with no word of it (a probe)
  const feed = stream("/v1/events", (type, data) => {
    if (type === "ready") refresh(); // (re)subscribed: what it missed meanwhile, read
    if (type !== "deleted" || JSON.parse(data).id !== id) return true;
    deleted = true;
    render();
    return false;
  });
  return { dispose() { events.close(); log.close(); feed.close(); } };
}
