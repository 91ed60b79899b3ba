// Server-sent events over fetch: EventSource cannot send an Authorization header, and the
// token must never go in a URL. Reconnects with Last-Event-ID, so a dropped connection
// resumes where it stopped (the server's streams are resumable by id). `path` may be a
// function, for streams whose URL pins what the first connection learned.
import { headers } from "./api.js";

export function stream(path, onEvent, { lastEventId = null, retryMs = 1000, onState = () => {} } = {}) {
  let controller = null;
  let closed = false;
  let lastId = lastEventId;
  let delay = retryMs;

  async function connect() {
    while (!closed) {
      controller = new AbortController();
      const h = headers({ Accept: "text/event-stream" });
      if (lastId !== null) h["Last-Event-ID"] = String(lastId);
      let finished = false;
      try {
        const url = typeof path === "function" ? path() : path;
        const res = await fetch(url, { headers: h, signal: controller.signal, cache: "no-store" });
        if (!res.ok) throw new Error(`HTTP ${res.status}`);
        onState("open");
        delay = retryMs;
        finished = await read(res.body.getReader());
      } catch (err) {
        if (closed) return;
        onState("error", err);
      }
      if (finished || closed) return;
      onState("reconnecting");
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 15000);
    }
  }

  // Returns true when the handler asked to stop (the stream's natural end).
  async function read(reader) {
    const decoder = new TextDecoder();
    let buf = "";
    let event = { type: "message", data: [], id: null };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return false;
      buf += decoder.decode(value, { stream: true });
      let nl;
      while ((nl = buf.search(/\r\n|\r|\n/)) >= 0) {
        // a CR that ends what has come may be the first half of a CR LF split between two
        // reads (a proxy, TLS, a slow link): its LF read as a line of its own ended the event
        // early, as a `message`, and the rest of it was lost (a probe)
        if (nl === buf.length - 1 && buf[nl] === "\r") break;
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + (buf.startsWith("\r\n", nl) ? 2 : 1));
        if (line === "") {
          if (event.data.length) {
            if (event.id !== null) lastId = event.id;
            if (onEvent(event.type, event.data.join("\n"), event.id) === false) {
              close();
              return true;
            }
          }
          event = { type: "message", data: [], id: null };
        } else if (!line.startsWith(":")) {
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          let val = colon < 0 ? "" : line.slice(colon + 1);
          if (val.startsWith(" ")) val = val.slice(1);
          if (field === "data") event.data.push(val);
          else if (field === "event") event.type = val;
          else if (field === "id") event.id = val;
        }
      }
    }
  }

  function close() {
    closed = true;
    if (controller) controller.abort();
  }

  connect();
  return { close, get lastId() { return lastId; } };
}
