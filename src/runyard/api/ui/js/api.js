// Talking to the server: JSON with the session's token, problems turned into errors.
const TOKEN_KEY = "runyard.token";

export const token = {
  get: () => sessionStorage.getItem(TOKEN_KEY) || "",
  set: (value) => value ? sessionStorage.setItem(TOKEN_KEY, value) : sessionStorage.removeItem(TOKEN_KEY),
};

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

const listeners = { unauthorized: [] };
export const onUnauthorized = (fn) => listeners.unauthorized.push(fn);

export function headers(extra = {}) {
  const h = { Accept: "application/json", ...extra };
  const t = token.get();
  if (t) h.Authorization = `Bearer ${t}`;
  return h;
}

// A number JavaScript cannot hold exactly (an integer past 2^53 written in digits) is kept as
// the text the server sent (JSON.rawJSON, where the browser has it): shown and sent back as
// it is, never rounded. `inexact` says whether a value still holds one that was rounded.
const KEEPS_SOURCE = typeof JSON.rawJSON === "function";
const unsafe = (v) => typeof v === "number" && (!Number.isFinite(v) || (Number.isInteger(v) && !Number.isSafeInteger(v)));
// kept: only a number past a double's range is rounded (to Infinity); else any unsafe integer may be
const rounded = (v) => typeof v === "number" && (KEEPS_SOURCE ? !Number.isFinite(v) : unsafe(v));

function exact(key, value, context) {
  if (KEEPS_SOURCE && unsafe(value) && context && /^-?\d+$/.test(context.source)) return JSON.rawJSON(context.source);
  return value;
}

export const parse = (text) => JSON.parse(text, exact);

export function inexact(value) {
  if (rounded(value)) return true;
  if (value && typeof value === "object" && !(KEEPS_SOURCE && JSON.isRawJSON(value))) {
    return Object.values(value).some(inexact);
  }
  return false;
}

export async function request(method, path, body, extra = {}) {
  const init = { method, headers: headers(extra) };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  const res = await fetch(path, init);
  if (res.status === 401) listeners.unauthorized.forEach((fn) => fn());
  if (!res.ok) {
    let problem = { detail: `${res.status} ${res.statusText}` };
    try { problem = await res.json(); } catch { /* not JSON: keep the status line */ }
    throw new ApiError(res.status, problem);
  }
  return res.status === 204 ? null : parse(await res.text());
}

export const get = (path) => request("GET", path);
export const post = (path, body) => request("POST", path, body);
export const patch = (path, body) => request("PATCH", path, body);
export const del = (path) => request("DELETE", path);

// A file chosen in a form, streamed to PUT /v1/uploads: its upload (id, name, size).
export async function upload(file) {
  const res = await fetch(`/v1/uploads?name=${encodeURIComponent(file.name)}`, {
    method: "PUT", body: file, headers: headers({ "Content-Type": "application/octet-stream" }),
  });
  if (res.status === 401) listeners.unauthorized.forEach((fn) => fn());
  if (!res.ok) {
    let problem = { detail: `${res.status} ${res.statusText}` };
    try { problem = await res.json(); } catch { /* not JSON: keep the status line */ }
    throw new ApiError(res.status, problem);
  }
  return res.json();
}

// A file of a run as a Blob (artifacts need the token too, so no plain links).
export async function blob(path, range) {
  const res = await fetch(path, { headers: headers(range ? { Range: range } : {}) });
  if (!res.ok && res.status !== 206) throw new ApiError(res.status, { detail: `${res.status} ${res.statusText}` });
  return res.blob();
}

export function qs(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (Array.isArray(v)) v.forEach((x) => q.append(k, x));
    else if (v !== undefined && v !== null && v !== "") q.set(k, v);
  }
  const s = q.toString();
  return s ? `?${s}` : "";
}
