// A live log: follows the tail while the reader is at the bottom, batches DOM updates per
// frame so fast output never freezes the page, resumes by byte offset after a drop.
import { headers } from "../api.js";
import { stream } from "../sse.js";
import { h, ACTIVE, marked } from "../util.js";

const MAX_CHARS = 2_000_000; // beyond this the oldest text leaves the page (the file keeps it)
// A finished run's log opens at its last TAIL_BYTES: read whole to keep its last 2 MB, a
// 330 MB log held the page for seconds (a probe). A running run's is followed from its start.
const TAIL_BYTES = 1_000_000;

// Where a finished attempt's log is opened: its size, less TAIL_BYTES (0: from the start).
async function tailOffset(runId, attempt) {
  try {
    const res = await fetch(`/v1/runs/${runId}/logs?attempt=${attempt}`,
      { method: "HEAD", headers: headers(), cache: "no-store" });
    const size = Number(res.headers.get("x-log-size"));
    return res.ok && Number.isSafeInteger(size) && size > TAIL_BYTES ? size - TAIL_BYTES : 0;
  } catch {
    return 0; // read from the start, as ever
  }
}

function decodeB64(data) {
  const bin = atob(data);
  const buf = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) buf[i] = bin.charCodeAt(i);
  return buf;
}

export function logView(runId, run = null) {
  const pre = h("pre", { class: "log", id: "log", tabindex: "0" });
  const note = h("div", { class: "log-note muted", id: "log-note" }, "connecting…");
  const el = h("div", { class: "log-wrap" }, note, pre);
  const bytesDecoder = new TextDecoder("utf-8");
  let pending = [];
  let scheduled = false;
  let attempt = null;
  let current = null;
  let trimmed = false;
  let partLine = false; // opened past the start: the first line is cut, and left out

  function atBottom() {
    return pre.scrollHeight - pre.scrollTop - pre.clientHeight < 40;
  }

  function flush() {
    scheduled = false;
    if (!pending.length) return;
    const follow = atBottom();
    // lines stay lines; what would reorder or hide the program's text is written out
    pre.append(...marked(pending.join(""), true));
    pending = [];
    if (pre.textContent.length > MAX_CHARS) {
      // whole pieces dropped from the front, never the text rewritten: a written-out code
      // keeps its mark (and is never cut in two), a program's own "\u202e" text stays plain
      let excess = pre.textContent.length - MAX_CHARS / 2;
      while (excess > 0 && pre.firstChild) {
        const node = pre.firstChild;
        const n = node.textContent.length;
        if (n <= excess || node.nodeType !== Node.TEXT_NODE) {
          node.remove();
          excess -= n;
        } else {
          const low = node.data.charCodeAt(excess);
          node.data = node.data.slice(low >= 0xdc00 && low <= 0xdfff ? excess + 1 : excess);
          excess = 0;
        }
      }
      trimmed = true;
    }
    if (follow) pre.scrollTop = pre.scrollHeight;
  }

  function write(text) {
    if (partLine) {
      const nl = text.indexOf("\n");
      if (nl < 0) return;
      text = text.slice(nl + 1);
      partLine = false;
    }
    pending.push(text);
    if (!scheduled) { scheduled = true; requestAnimationFrame(flush); }
  }

  function status(text) {
    note.textContent = `${attempt ? `attempt ${attempt} · ` : ""}${text}${trimmed ? " · earlier output trimmed" : ""}`;
  }

  function follow(pinned, offset = 0) {
    attempt = pinned;
    if (offset > 0) { trimmed = true; partLine = true; }
    // `offset` on the first connection; a reconnect resumes by Last-Event-ID, which wins
    const query = () => [attempt ? `attempt=${attempt}` : "", offset ? `offset=${offset}` : ""]
      .filter(Boolean).join("&");
    current = stream(() => `/v1/runs/${runId}/logs/stream${query() ? `?${query()}` : ""}`, (type, data) => {
      if (type === "attempt") {
        attempt = JSON.parse(data).attempt;
        status("live");
      } else if (type === "log") write(data);
      else if (type === "log.b64") write(bytesDecoder.decode(decodeB64(data), { stream: true }));
      else if (type === "end") {
        const end = JSON.parse(data);
        flush();
        if (ACTIVE.has(end.state)) { // another attempt follows: show it below this one
          write(`\n──── attempt ${end.attempt} ended; run is ${end.state} ────\n`);
          status(`ended (${end.state})`);
          // the next attempt by number, which the server waits for: the latest, asked for
          // while the retry had not started, was the one just ended, replayed whole, every
          // half second, until it did (a probe)
          follow(end.attempt + 1);
        } else {
          status(`ended: ${end.state}${end.exit_code !== null && end.exit_code !== undefined ? `, exit code ${end.exit_code}` : ""}`);
          pre.dataset.ended = end.state;
        }
        return false;
      } else if (type === "lagged") status("catching up…");
      return true;
    }, { onState: (s) => status(s === "open" ? "live" : s === "reconnecting" ? "reconnecting…" : "connection lost") });
  }

  return {
    el,
    async start() {
      if (run && !ACTIVE.has(run.state) && run.attempt >= 1) {
        follow(run.attempt, await tailOffset(runId, run.attempt));
      } else follow(null);
    },
    close() { if (current) current.close(); },
  };
}
