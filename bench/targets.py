"""The report's section on issue 16's targets: each figure from this run, the ratios from
the medians of the interleaved head-to-head rounds."""

from __future__ import annotations

import statistics
from typing import Any

from bench.interleave import BLOCK, WARM_UP


def ok(flag: bool) -> str:
    return "met" if flag else "**missed**"


def _rounds(xs: list[float]) -> str:
    return " / ".join(f"{x:.0f}" for x in xs)


def _round_ms(xs: list[float]) -> str:
    return " / ".join(f"{x:.2f}" for x in xs)


def _wakes(head: dict[str, list[float]]) -> str:
    """The machine's speed in each round: what waking a thread and being answered costs, and
    what a fixed piece of plain Python costs."""
    return _per_round(
        head.get("wake_round_trip_us"),
        " Before each runyard round, one round trip between two threads (a queue put that "
        "wakes one, and its answer: what each hand-over to the store's thread and back costs) "
        "took {} µs of CPU (`bench.floor.wake_round_trip`): a measure of this stretch of the "
        "machine, to read the server's figure beside.",
    ) + _per_round(
        head.get("interpreter_ms"),
        " A fixed piece of plain Python (a million method calls that fill a dict) took {} ms "
        "of CPU (`bench.floor.interpreter_ms`): most of the server's CPU per run is "
        "interpreted code, and moves with it.",
    )  # fmt: skip


def _pairs(first: list[float], second: list[float]) -> str:
    return ", ".join(f"{a:.0f} / {b:.0f}" for a, b in zip(first, second, strict=True))


def _per_round(figures: list[float] | None, sentence: str) -> str:
    return sentence.format(" / ".join(f"{f:.0f}" for f in figures)) if figures else ""


def issue16_section(r: dict[str, Any]) -> str:
    t, head = r["tmpfs"], r["head_to_head"]
    # the medians of the interleaved rounds: one slower stretch of the machine moves no ratio
    ry, cb, cf = (statistics.median(head[k]) for k in ("runyard", "celery_bare", "celery_fair"))
    aio = head.get("runyard_aiohttp") or [float("nan")]
    server = statistics.median(head["runyard_server_cpu"])
    ry_idle, ry_warm, cl_idle, cl_warm = (
        statistics.median(head[k])
        for k in ("runyard_wait_idle", "runyard_wait_warm", "celery_wait_idle", "celery_wait_warm")
    )  # fmt: skip
    idle50, idle99 = r["idle_dispatch"]
    sub = r["submissions"]["accepted_per_s"]
    floor = t["runyard_c8"] / t["floor_c8"]  # both from the throughput section
    b = r["batch"]
    bfloor = b.get("floor_per_s", t["floor_c8"])  # measured beside the batch, in its rounds
    return f"""
## Issue 16's targets, from this run

The ratios to Celery are those of medians over {len(head["runyard"])} interleaved rounds, each
a runyard round (a fresh server, C = 8, N = {r["n"]} over HTTP) followed by Celery's bare and
same-work rounds (one prefork worker of concurrency 8): this machine's speed drifts by ±15 %
over minutes, and interleaving puts each slower stretch on both sides. Runs/s per round:
runyard {_rounds(head["runyard"])} (with aiohttp submitting instead of wrk, each right after:
{_rounds(head.get("runyard_aiohttp") or [])}); Celery bare {_rounds(head["celery_bare"])}, same work
{_rounds(head["celery_fair"])}; the server's CPU per run in runyard's rounds
{_round_ms(head["runyard_server_cpu"])} ms.{_wakes(head)} A single run's p50 is taken in each round too, after
Celery's throughput, runyard's `Prefer: wait` and bare Celery's `delay().get()` taking turns
(bench/interleave.py: a fresh runyard server, C = 8, beside the Celery worker; {r["latency_round"][0]} idle runs
each, {r["latency_round"][2] * 1000:.0f} ms apart, the two alternating run by run; {r["latency_round"][1]} warm runs each,
back to back in blocks of {BLOCK} that alternate, each block's first {WARM_UP} left out): a single run's
p50 drifts by more from one minute to the next than the two differ, and taking turns puts
the drift on both (ms per round, idle: runyard {_round_ms(head["runyard_wait_idle"])}, Celery {_round_ms(head["celery_wait_idle"])};
warm: runyard {_round_ms(head["runyard_wait_warm"])}, Celery {_round_ms(head["celery_wait_warm"])}). The
other rows are the single measurements above.

| target | figure | |
|---|---|---|
| runyard ≥ 2× Celery with the same per-run work (C = 8) | {ry / cf:.2f}× | {ok(ry >= 2 * cf)} |
| the same, aiohttp in the bench process as runyard's load generator (for comparison) | {statistics.median(aio) / cf:.2f}× | |
| runyard ≥ 1.3× bare Celery (C = 8) | {ry / cb:.2f}× | {ok(ry >= 1.3 * cb)} |
| runyard ≥ 0.5× the asyncio floor (C = 8) | {floor:.2f}× | {ok(floor >= 0.5)} |
| server CPU per run ≤ 0.8 ms (C = 8; median of the rounds) | {server:.2f} ms | {ok(server <= 0.8)} |
| single run `Prefer: wait` p50 below Celery's `delay().get()` (bare), idle / warm | {ry_idle:.2f} vs {cl_idle:.2f} / {ry_warm:.2f} vs {cl_warm:.2f} ms | {ok(ry_idle < cl_idle and ry_warm < cl_warm)} |
| dispatch latency, idle server, p50 ≤ 2 ms, p99 ≤ 25 ms | {idle50:.2f} / {idle99:.2f} ms | {ok(idle50 <= 2 and idle99 <= 25)} |
| accepted single submissions ≥ 2000/s (32 clients, wrk) | {sub:.0f}/s | {ok(sub >= 2000)} |
| a batch of {r["n_batch"]:,} runs ≥ 0.8× the asyncio floor, end to end (C = 8; medians of the rounds) | {b["runs_per_s"]:.0f}/s = {b["runs_per_s"] / bfloor:.2f}× | {ok(b["runs_per_s"] >= 0.8 * bfloor)} |

The batch's ratio is that of medians too: {len(b.get("rounds", [1]))} rounds, each an asyncio floor of
{r["n_batch"]:,} runs then a fresh runyard server's batch of as many (runs/s, floor / runyard:
{_pairs(b.get("floor_rounds", [bfloor]), b.get("rounds", [b["runs_per_s"]]))}). The batch, CPU per run (the round nearest the median): server {b["cpu"]["server"]:.2f} ms ({b["cpu"].get("server.main_thread", 0):.2f} on
the event loop), supervisor {b["cpu"]["supervisor"]:.2f} ms, programs {b["cpu"]["programs"]:.2f} ms
(accepted → last run ended, one request of `iterations`: no HTTP per run).
"""
