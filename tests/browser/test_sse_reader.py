"""The dashboard's event-stream reader takes a CR LF split between two reads as one line end
(a probe: behind a proxy that sent each CR and its LF apart, a run's log panel stayed empty
and "live" for good; the LF, read as a line of its own, ended each event early as a
`message`, which no page listens to). The reader is fed chosen pieces through a stubbed
`fetch` in the real Chromium: each piece one read, whatever the network does."""

from __future__ import annotations

from playwright.sync_api import Page

FEED = """async (pieces) => {
  const { stream } = await import("/ui/js/sse.js");
  window.fetch = async () => new Response(new ReadableStream({
    start(c) {
      for (const p of pieces) c.enqueue(new TextEncoder().encode(p));
      c.close();
    },
  }), { status: 200, headers: { "content-type": "text/event-stream" } });
  const got = [];
  await new Promise((resolve) => {
    const onState = (state) => {  // the pieces read to their end without an `end`
      if (state === "reconnecting") { handle.close(); resolve(); }
    };
    const handle = stream("/nowhere", (type, data, id) => {
      got.push([type, data, id]);
      if (type === "end") { resolve(); return false; }
    }, { onState });
  });
  return got;
}"""


def test_a_line_end_split_between_reads_is_one(start_server, page: Page) -> None:
    server = start_server()
    page.goto(f"{server.url}/ui/")
    pieces = [
        "event: log\r", "\ndata: one\r", "\nid: 3\r", "\n\r", "\n",  # each CR LF split
        ": a heartbeat\r\n\r\nevent: log\r\ndata: two\r\n\r\n",  # whole, as most come
        "event: end\r", '\ndata: {"state": "succeeded"}\r', "\n\r", "\n",
    ]  # fmt: skip
    got = page.evaluate(FEED, pieces)
    assert got == [
        ["log", "one", "3"], ["log", "two", None], ["end", '{"state": "succeeded"}', None],
    ]  # fmt: skip
