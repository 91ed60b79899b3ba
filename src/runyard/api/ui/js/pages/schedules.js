// Schedules: when each fires next, pause and resume, delete.
import * as api from "../api.js";
import { h, ago, errorBox, shown, jsonShown, visible } from "../util.js";

export async function schedulesPage(ctx) {
  const tbody = h("tbody");
  const msg = h("div", { role: "status" });

  async function act(fn) {
    try { await fn(); await load(); } catch (err) { msg.replaceChildren(errorBox(err)); }
  }

  function row(s) {
    return h("tr", { dataset: { id: s.id } },
      h("td", { class: "mono" }, shown(s.id.slice(-10))), h("td", {}, shown(s.job)),
      h("td", { class: "mono" }, s.cron ? shown(s.cron) : `every ${s.interval_s}s`),
      h("td", { class: "mono small" }, jsonShown(s.params)),
      h("td", {}, s.paused ? h("span", { class: "badge state-cancelled" }, "paused") : h("span", { class: "badge state-running" }, "active"),
        // its fires make no run (its job removed, its params refused): said, with why
        s.last_error ? h("span", { class: "badge state-failed", title: visible(s.last_error) }, `failing (${s.fail_count}×)`) : null),
      h("td", { title: s.next_fire_at || "" }, s.paused || !s.next_fire_at ? "" : new Date(s.next_fire_at).toLocaleString()),
      h("td", { title: s.last_fired_at || "" }, s.last_fired_at ? `${ago(s.last_fired_at)} (${s.fire_count}×)` : "never"),
      h("td", {},
        ctx.can("submit") ? h("button", { type: "button", class: "ghost small", onclick: () => act(() => api.patch(`/v1/schedules/${s.id}`, { paused: !s.paused })) }, s.paused ? "Resume" : "Pause") : null,
        ctx.can("admin") ? h("button", { type: "button", class: "danger small", onclick: () => act(() => api.del(`/v1/schedules/${s.id}`)) }, "Delete") : null));
  }

  async function load() {
    const list = [];
    for (let cursor = null, first = true; first || cursor; first = false) {
      const page = await api.get(`/v1/schedules?limit=500${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
      list.push(...page.schedules);
      cursor = page.next_cursor;
    }
    tbody.replaceChildren(...list.map(row));
    if (!list.length) tbody.append(h("tr", {}, h("td", { colspan: 8, class: "empty" }, "No schedules. POST /v1/schedules or `runyard schedule create` makes one.")));
  }

  ctx.main.append(h("div", { class: "page-head" }, h("h1", {}, "Schedules")), msg,
    h("table", { class: "runs" }, h("thead", {}, h("tr", {}, ["Schedule", "Job", "When", "Params", "State", "Next", "Last", ""].map((t) => h("th", {}, t)))), tbody));
  await load();
  const timer = setInterval(() => load().catch(() => {}), 10000); // next/last times move on
  return { dispose() { clearInterval(timer); } };
}
