"""A stored or program-made value cannot change how the dashboard reads (an attacker's probe):
a param `invoice_<U+202E>gpj.exe` showed as `invoice_exe.jpg` and reversed the param after
it (`choice=b` as `b=eciohc`); a progress message behind fifty U+202E read backwards; the
run's Params block, a schedule's params, a job's description and the log showed the same
controls raw. Each is now shown with its controls written out (`\\u202e`) and kept apart
from what surrounds it: checked in the text and, where a neighbour could be falsified, in
the order the characters are laid out on the screen."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from playwright.sync_api import Locator, Page, expect

from tests import web
from tests.support import wait_for

RLO = "\u202e"
RLO_SHOWN = "\\u202e"
HOSTILE = f"invoice_{RLO}gpj.exe"
PARAMS = {"s": HOSTILE, "choice": "b"}
# the bidi controls: raw, each reorders what follows it
RAW = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")

BIDI = r"""
description = "makes files \u202eexe.fdp"
command = ["sh", "-c", '''
printf 'before \342\200\256RTL\342\200\254 after\n'
p='{{"fraction":0.5,"message":"MESSAGE"}}'
printf '%s\n' "$p" >> "$RUNYARD_PROGRESS_FILE"
''']
[params.s]
type = "str"
[params.choice]
type = "enum"
choices = ["a", "b", "\u202ec"]
""".replace("MESSAGE", RLO_SHOWN * 50 + "step done")

# Where each character of `needle` (the first place it occurs in the element's text) is laid
# out, left to right on the screen; null when the element's text does not hold it. A page that
# re-reads its list replaces the element between Playwright finding it and this running:
# detached, it has no layout, and is looked for again.
LEFTS = """(el, needle) => {
  if (!el.isConnected) return "detached";
  const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
  const nodes = [];
  let text = "";
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    nodes.push([n, text.length]);
    text += n.data;
  }
  const at = text.indexOf(needle);
  if (at < 0) return null;
  const lefts = [];
  for (let i = at; i < at + needle.length; i++) {
    const [node, start] = nodes.find(([n, s]) => s <= i && i < s + n.data.length);
    const r = document.createRange();
    r.setStart(node, i - start);
    r.setEnd(node, i - start + 1);
    lefts.push(r.getBoundingClientRect().left);
  }
  return lefts;
}"""


def reads_as(where: Locator, needle: str) -> None:
    """`needle` is in the element's text and on the screen reads left to right as written."""

    def laid_out() -> list[list[float] | None] | None:
        got = where.evaluate(LEFTS, needle)
        return None if got == "detached" else [got]

    lefts = wait_for(laid_out, what="the element to stay on the page")[0]
    assert lefts is not None, f"{needle!r} is not in {where.text_content()!r}"
    assert lefts == sorted(set(lefts)), f"{needle!r} is laid out out of order: {lefts}"


def shown_plainly(where: Locator, text: str) -> None:
    """The element shows `text` (controls written out) and holds no raw bidi control."""
    expect(where).to_contain_text(text)
    content = where.text_content() or ""
    assert not RAW.search(content), f"a raw bidi control in {content!r}"


def test_a_runs_params_progress_and_log_show_their_controls_and_leave_the_rest_alone(
    start_server, write_job, jobs_dir: Path, page: Page
) -> None:
    write_job("bidi", BIDI)
    server = start_server(jobs_dir)
    made = web.post(f"{server.url}/v1/runs", json={"job": "bidi", "params": PARAMS})
    assert made.status_code == 202, made.text
    run_id = made.json()["id"]
    wait_for(
        lambda: web.get(f"{server.url}/v1/runs/{run_id}").json()["state"] == "succeeded",
        timeout=60,  # a short program, but the machine may be busy with other suites
        what="the run to end",
    )

    page.goto(f"{server.url}/ui/#/runs")
    row = page.locator(f"tr[data-id='{run_id}']")
    params = row.locator("td.params")
    expect(params).to_contain_text("choice=b")
    reads_as(params, "choice=b")  # the param after it, not `b=eciohc`
    shown_plainly(params, f"s=invoice_{RLO_SHOWN}gpj.exe")
    reads_as(params, f"invoice_{RLO_SHOWN}gpj.exe")
    message = row.locator("td.prog .small")
    expect(message).to_contain_text("step done")
    reads_as(message, "step done")  # not `enod pets`
    shown_plainly(message, RLO_SHOWN * 50 + "step done")

    page.goto(f"{server.url}/ui/#/runs/{run_id}")
    expect(page.locator("#log")).to_have_attribute("data-ended", "succeeded")
    block = page.locator("#params")
    shown_plainly(block, f'"s": "invoice_{RLO_SHOWN}gpj.exe"')
    reads_as(block, f'"s": "invoice_{RLO_SHOWN}gpj.exe",')
    reads_as(block, '"choice": "b"')
    log = page.locator("#log")
    shown_plainly(log, f"before {RLO_SHOWN}RTL\\u202c after")
    reads_as(log, "RTL")
    shown_plainly(page.locator("#progress-text"), RLO_SHOWN * 50 + "step done")

    page.goto(f"{server.url}/ui/#/jobs/bidi")
    detail = page.locator(".job-detail")
    shown_plainly(detail, f"makes files {RLO_SHOWN}exe.fdp")
    shown_plainly(page.locator("#param-choice"), f"{RLO_SHOWN}c")
    # a name in a link someone sent is said back with its control written out too
    page.goto(f"{server.url}/ui/#/jobs/x%E2%80%AEyz")
    shown_plainly(page.locator(".job-detail .error"), f"job x{RLO_SHOWN}yz is not declared")


def test_a_schedules_params_show_their_controls_and_the_empty_page_names_a_real_command(
    start_server, write_job, jobs_dir: Path, page: Page
) -> None:
    write_job("bidi", BIDI)
    server = start_server(jobs_dir)

    page.goto(f"{server.url}/ui/#/schedules")
    empty = page.locator("td.empty")
    expect(empty).to_contain_text("runyard schedule")
    named = re.search(r"`runyard ([^`]+)`", empty.text_content() or "")
    assert named, empty.text_content()
    helped = subprocess.run(
        [sys.executable, "-m", "runyard", *named[1].split(), "--help"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert helped.returncode == 0, f"`runyard {named[1]}` is no command: {helped.stderr}"

    body = {"job": "bidi", "params": PARAMS, "interval_s": 3600, "paused": True}
    made = web.post(f"{server.url}/v1/schedules", json=body)
    assert made.status_code == 201, made.text
    page.reload()
    cell = page.locator(f"tr[data-id='{made.json()['id']}'] td").nth(3)
    shown_plainly(cell, f'"s":"invoice_{RLO_SHOWN}gpj.exe"')
    reads_as(cell, f'"invoice_{RLO_SHOWN}gpj.exe",')
    reads_as(cell, '"choice":"b"}')
    # only shown so: the value itself is kept as it was given
    assert web.get(f"{server.url}/v1/schedules").json()["schedules"][0]["params"] == PARAMS


LONG = r"""
command = ["python3", "-c", '''
import sys
w = sys.stdout.write
for _ in range(1500):
    w("a" * 999 + "\n")
w("marked \u202e here\n")
for _ in range(700):
    w("b" * 999 + "\n")
''']
"""


def test_a_long_logs_trimmed_text_keeps_its_written_out_codes_marked(
    start_server, write_job, jobs_dir: Path, page: Page
) -> None:
    """A review: past two million characters the log panel kept its last half by rewriting its
    text, which flattened the marked codes into plain text (a program's own `\\u202e` then read
    the same as a control written out)."""
    write_job("long", LONG)
    server = start_server(jobs_dir)
    run_id = web.post(f"{server.url}/v1/runs", json={"job": "long"}).json()["id"]
    wait_for(
        lambda: web.get(f"{server.url}/v1/runs/{run_id}").json()["state"] == "succeeded",
        timeout=60, what="the run to end",
    )  # fmt: skip
    page.goto(f"{server.url}/ui/#/runs/{run_id}")
    log = page.locator("#log")
    expect(log).to_have_attribute("data-ended", "succeeded")
    expect(page.locator(".log-note, #log-note").first).to_contain_text("trimmed")
    mark = log.locator("span.esc")
    expect(mark).to_have_count(1)
    expect(mark).to_have_text(RLO_SHOWN)
    assert not RAW.search(log.text_content() or "")
