// Jobs: each declared job, and a submit form generated from its params' JSON Schema.
// The form shows bounds and choices as you type; the server stays the judge, and its 422
// lands next to the field it names.
import * as api from "../api.js";
import { h, errorBox, marked, shown, visible } from "../util.js";

// a file param's value is `upload:ID[/NAME]`: its pattern says so (upload_refs.py)
const isFileParam = (prop) => typeof prop.pattern === "string" && prop.pattern.startsWith("^upload:");
const MIB = 1024 * 1024;

// What a file input says before anything is uploaded: its size limit and accepted kinds.
function fileLimits(prop) {
  return [prop["x-max-mb"] !== undefined ? `at most ${prop["x-max-mb"]} MB` : null,
    prop["x-accept"] ? prop["x-accept"].join(" ") : null];
}

function tooBig(input, prop) {
  const file = input.files && input.files[0];
  const max = prop["x-max-mb"];
  return file && max !== undefined && file.size > max * MIB
    ? `${file.name} is ${(file.size / MIB).toFixed(1)} MB, over this param's ${max} MB` : "";
}

// The argv as words: one that is empty or holds a space or a quote is quoted (JSON), so
// that where each word ends is seen, and each is shown apart.
function commandShown(argv) {
  return argv.flatMap((a, i) => [i ? " " : "", shown(a === "" || /[\s"'\\]/.test(a) ? JSON.stringify(a) : a)]);
}

function fieldFor(name, prop, required) {
  const id = `param-${name}`;
  const attrs = { id, name, "aria-describedby": `err-${name}` };
  const isFile = isFileParam(prop);
  let input;
  if (isFile) {
    input = h("input", { ...attrs, type: "file", accept: prop["x-accept"] ? prop["x-accept"].join(",") : null, required });
  } else if (Array.isArray(prop.enum)) {
    input = h("select", attrs, prop.enum.map((v) => h("option", { value: JSON.stringify(v), selected: v === prop.default }, visible(v))));
  } else if (prop.type === "boolean") {
    input = h("input", { ...attrs, type: "checkbox", checked: prop.default === true });
  } else if (prop.type === "integer" || prop.type === "number") {
    input = h("input", { ...attrs, type: "number", step: prop.type === "integer" ? "1" : "any",
      min: prop.minimum ?? null, max: prop.maximum ?? null, value: prop.default ?? "", required: required && prop.default === undefined });
  } else {
    input = h("input", { ...attrs, type: "text", maxlength: prop.maxLength ?? null, value: prop.default ?? "",
      required: required && prop.default === undefined, size: 40 });
  }
  input.dataset.kind = isFile ? "file" : Array.isArray(prop.enum) ? "enum" : prop.type;
  const hint = [isFile ? "file" : prop.type, ...(isFile ? fileLimits(prop) : []), prop.minimum !== undefined ? `≥ ${prop.minimum}` : null, prop.maximum !== undefined ? `≤ ${prop.maximum}` : null,
    prop.maxLength ? `at most ${prop.maxLength} characters` : null, required ? "required" : null].filter(Boolean).join(", ");
  const err = h("span", { class: "field-error", id: `err-${name}`, role: "alert" });
  // shown as you type; the browser's own message says what is out of bounds
  input.addEventListener(isFile ? "change" : "input", () => {
    err.textContent = visible(isFile ? tooBig(input, prop) : input.validity.valid ? "" : input.validationMessage);
  });
  // an input shows its text raw (it is what is sent): what that hides or turns around is
  // said beside it, written out, for a default as for what is typed or pasted
  const hidden = h("span", { class: "muted small hidden-chars" });
  const sayHidden = () => hidden.replaceChildren(...(input.type === "text" && visible(input.value) !== input.value
    ? ["holds hidden characters: ", shown(input.value)] : []));
  input.addEventListener("input", sayHidden);
  sayHidden();
  return h("div", { class: "field" },
    h("label", { for: id }, visible(name)), input, h("span", { class: "hint muted small" }, visible(hint)), hidden,
    prop.description ? h("div", { class: "muted small" }, marked(prop.description)) : null, err);
}

// The form's values; each chosen file is uploaded first and named by its upload id.
async function readParams(form, schema, status) {
  const params = {};
  for (const [name, prop] of Object.entries(schema.properties || {})) {
    const input = form.elements[name];
    const kind = input.dataset.kind;
    if (kind === "file") {
      if (!input.files.length) continue; // required: the server names it
      const big = tooBig(input, prop);
      if (big) throw Object.assign(new Error(big), { problem: { errors: [{ field: `params.${name}`, message: big }] } });
      status.textContent = `Uploading ${visible(input.files[0].name)}…`;
      params[name] = (await api.upload(input.files[0])).ref; // the file under its own name
      status.textContent = "";
    } else if (kind === "boolean") params[name] = input.checked;
    else if (kind === "enum") params[name] = JSON.parse(input.value);
    else if (input.value === "") continue; // the job's default applies
    else if (kind === "integer" || kind === "number") params[name] = Number(input.value);
    else params[name] = input.value;
  }
  return params;
}

function jobForm(ctx, job) {
  const schema = job.params_schema;
  const required = new Set(schema.required || []);
  const general = h("div", { class: "form-error", role: "alert" });
  const status = h("div", { class: "muted small", id: "submit-status", role: "status" });
  const form = h("form", { class: "submit-form", id: "submit-form", novalidate: true },
    Object.entries(schema.properties || {}).map(([n, p]) => fieldFor(n, p, required.has(n))),
    h("details", {}, h("summary", {}, "Priority and labels"),
      h("div", { class: "field" }, h("label", { for: "priority" }, "priority"), h("input", { id: "priority", name: "_priority", type: "number", step: "1", placeholder: String(job.priority) })),
      h("div", { class: "field" }, h("label", { for: "labels" }, "labels"), h("input", { id: "labels", name: "_labels", placeholder: "team=cfd, case=7", size: 40 }))),
    general, status,
    h("button", { type: "submit", id: "submit-run", disabled: !ctx.can("submit") }, ctx.can("submit") ? "Submit run" : "Submit (needs the submit role)"));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    form.querySelectorAll(".field-error").forEach((el) => { el.textContent = ""; });
    general.replaceChildren();
    try {
      const body = { job: job.name, params: await readParams(form, schema, status) };
      if (form.elements._priority.value !== "") body.priority = Number(form.elements._priority.value);
      const labels = form.elements._labels.value.split(",").map((s) => s.trim()).filter(Boolean);
      if (labels.length) body.labels = Object.fromEntries(labels.map((l) => l.split("=").map((s) => s.trim())));
      const run = await api.post("/v1/runs", body);
      location.hash = `#/runs/${run.id}`;
    } catch (err) {
      status.textContent = "";
      let placed = false;
      for (const fe of (err.problem && err.problem.errors) || []) {
        const name = String(fe.field).replace(/^(body\.)?params\./, "");
        const slot = form.querySelector(`#err-${CSS.escape(name)}`);
        if (slot) { slot.textContent = visible(fe.message); placed = true; }
      }
      if (!placed) general.replaceChildren(errorBox(err));
    }
  });
  return form;
}

export async function jobsPage(ctx, name) {
  const { jobs, errors } = await api.get("/v1/jobs");
  const list = h("ul", { class: "job-list" }, jobs.map((j) => h("li", { class: j.name === name ? "active" : "" },
    h("a", { href: `#/jobs/${encodeURIComponent(j.name)}` }, shown(j.name)), h("div", { class: "muted small" }, marked(j.description)))));
  const detail = h("section", { class: "job-detail" });
  const job = jobs.find((j) => j.name === name);
  if (job) {
    detail.append(h("h2", {}, shown(job.name)), h("p", {}, marked(job.description)),
      h("p", { class: "muted small mono" }, commandShown(job.command)),
      h("p", { class: "muted small" }, [job.timeout_s ? `timeout ${job.timeout_s}s` : "no timeout",
        `max attempts ${job.max_attempts}`, job.concurrency ? `concurrency ${job.concurrency}` : null,
        `workspace ${visible(job.workspace)}`].filter(Boolean).join(" · ")),
      jobForm(ctx, job));
  } else if (name) {
    detail.append(errorBox(new Error(`job ${name} is not declared`)));
  } else {
    detail.append(h("p", { class: "muted" }, "Pick a job to submit a run."));
  }
  const broken = Object.entries(errors || {});
  ctx.main.append(h("div", { class: "page-head" }, h("h1", {}, "Jobs")),
    h("div", { class: "columns jobs" }, h("nav", {}, list), detail));
  if (broken.length) {
    ctx.main.append(h("section", { class: "load-errors" }, h("h2", {}, "Job files that did not load"),
      h("ul", {}, broken.map(([f, why]) => h("li", {}, h("b", { class: "mono" }, shown(f)), ": ", marked(why, true))))));
  }
  return { dispose() {} };
}
