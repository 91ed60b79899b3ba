"""What a run holds is shown as it is in the dashboard (an attacker's probe): every page of a
run's files, not the first 1,000 in silence; the entries that cannot be served, named; a
name that reverses itself with a bidi override shown with the override visible ("exe.png"
was "gnp.exe"); and a resubmit that never rounds a param (an integer past 2^53 went back as
another number, or a null, and was accepted as such)."""

from __future__ import annotations

import re
from pathlib import Path

from playwright.sync_api import Page, expect

from tests import web
from tests.support import wait_for

MAKER = r"""
command = ["sh", "-c", '''
mkdir -p out/many
i=0; while [ $i -lt 1001 ]; do : > out/many/f$(printf %04d $i); i=$((i+1)); done
echo x > "out/$(printf '\342\200\256')gnp.exe"
ln -s /etc/passwd out/link
p='{{"fraction":1e308,"message":"step \u202eevil"}}'
printf '%s\n' "$p" >> "$RUNYARD_PROGRESS_FILE"
''']
artifacts = ["out/**"]
[params.j]
type = "json"
"""
BIG = "18446744073709551617"  # 2^64 + 1: a double would make it ...552000


def test_a_runs_files_and_params_are_shown_and_resubmitted_as_they_are(
    start_server, write_job, jobs_dir: Path, page: Page
) -> None:
    write_job("maker", MAKER)
    server = start_server(jobs_dir)
    body = '{"job": "maker", "params": {"j": {"big": ' + BIG + ', "small": 1}}}'
    made = web.post(
        f"{server.url}/v1/runs", content=body, headers={"content-type": "application/json"}
    )
    assert made.status_code == 202, made.text
    run_id = made.json()["id"]
    wait_for(
        lambda: web.get(f"{server.url}/v1/runs/{run_id}").json()["state"] == "succeeded",
        what="the run to make its files",
    )
    page.goto(f"{server.url}/ui/#/runs/{run_id}")
    expect(page.locator(".run-head .badge")).to_have_text("succeeded")
    files = page.locator("ul.artifacts li[data-path]")
    expect(files).to_have_count(1002)  # past the first page's 1,000
    expect(page.locator("li[data-path='out/many/f1000']")).to_have_count(1)
    expect(page.locator("ul.artifacts .skipped")).to_contain_text("out/link")
    expect(page.locator("li[data-path='out/\u202egnp.exe'] .path")).to_have_text(
        "out/\\u202egnp.exe"
    )
    expect(page.locator("#progress-text")).to_have_text("100% · step \\u202eevil")

    page.click("#resubmit")
    expect(page).to_have_url(re.compile(r"#/runs/(?!" + run_id + r")[0-9A-Z]{26}$"))
    again = page.url.rsplit("/", 1)[1]
    raw = web.get(f"{server.url}/v1/runs/{again}").text
    assert '"big":' + BIG in raw.replace(" ", "")  # the same integer, not ...552000
