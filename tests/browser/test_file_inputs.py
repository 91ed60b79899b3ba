"""File params in the dashboard (issue 18): a file chosen in the job form is uploaded, the run
reads it, and the run page lists it with a download; the limits show before any upload."""

from __future__ import annotations

import json
import re
from pathlib import Path

from playwright.sync_api import Page, expect

from tests import web

TABLE = "x,y\n1,10\n2,20\n3,60\n"


def test_choose_a_csv_in_the_form_and_see_the_run_read_it(
    start_server, page: Page, tmp_path: Path
) -> None:
    server = start_server()  # the example jobs: summarize takes a CSV or TSV
    source = tmp_path / "measurements.csv"
    source.write_text(TABLE)
    page.goto(f"{server.url}/ui/#/jobs/summarize")
    field = page.locator(".field", has=page.locator("#param-table"))
    expect(field.locator(".hint")).to_contain_text("at most 100 MB")
    expect(field.locator(".hint")).to_contain_text(".csv .tsv")
    assert page.locator("#param-table").get_attribute("accept") == ".csv,.tsv"
    page.set_input_files("#param-table", str(source))
    page.click("#submit-run")

    expect(page).to_have_url(re.compile(r"#/runs/[0-9A-Z]{26}$"))
    run_id = page.url.rsplit("/", 1)[1]
    expect(page.locator(".run-head .badge")).to_have_text("succeeded")
    summary = web.get(f"{server.url}/v1/runs/{run_id}/artifacts/outputs/summary.json").json()
    assert summary["rows"] == 3
    assert summary["numeric"]["y"] == {"min": 10.0, "mean": 30.0, "max": 60.0}
    assert summary["file"] == "measurements.csv"

    item = page.locator("#inputs li[data-param='table']")
    expect(item).to_contain_text("measurements.csv")
    with page.expect_download() as info:
        item.locator(".download").click()
    saved = tmp_path / "downloaded.csv"
    info.value.save_as(saved)
    assert saved.read_text() == TABLE
    assert info.value.suggested_filename == "measurements.csv"


def test_a_file_over_the_params_limit_is_stopped_before_it_is_uploaded(
    start_server, page: Page, tmp_path: Path
) -> None:
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    (jobs / "tiny.toml").write_text(
        'command = ["cat", "{data}"]\n[params.data]\ntype = "file"\nmax_mb = 0.001\n'
    )
    server = start_server(jobs)
    big = tmp_path / "big.bin"
    big.write_bytes(b"z" * 5000)
    page.goto(f"{server.url}/ui/#/jobs/tiny")
    page.set_input_files("#param-data", str(big))
    expect(page.locator("#err-data")).to_contain_text("over this param's 0.001 MB")
    page.click("#submit-run")
    expect(page.locator("#err-data")).to_contain_text("over this param's 0.001 MB")
    assert not any((server.data_dir / "uploads").glob("*.json"))
    assert web.get(f"{server.url}/v1/runs").json()["runs"] == []
    assert json.loads(web.get(f"{server.url}/v1/jobs/tiny").text)["name"] == "tiny"
