"""From how an attempt ended to what its run becomes: terminal, or queued for a retry."""

from __future__ import annotations

import random
from dataclasses import replace

from runyard.execution.protocol import ExitRecord
from runyard.jobs.retry_on import signal_trigger
from runyard.jobs.spec import Backoff, JobSpec
from runyard.models import AttemptEnd, AttemptState, Run, RunState


def backoff_delay(policy: Backoff, attempt: int, rng: random.Random) -> float:
    """Exponential in the number of attempts made so far, capped, with +-jitter."""
    delay = min(policy.max_s, policy.base_s * policy.factor ** max(0, attempt - 1))
    return max(0.0, delay * (1 + rng.uniform(-policy.jitter, policy.jitter)))


def _maybe_retry(
    end: AttemptEnd, trigger: int | str | None, run: Run, spec: JobSpec, rng: random.Random
) -> AttemptEnd:
    if trigger is None or trigger not in spec.retry_on or run.attempt >= spec.max_attempts:
        return end
    delay = backoff_delay(spec.backoff, run.attempt, rng)
    return replace(
        end,
        run_state=RunState.QUEUED,
        reason=f"{end.reason}; retrying in {delay:.1f}s "
        f"(attempt {run.attempt + 1} of {spec.max_attempts})",
        not_before=end.ended_at + delay,
    )


def decide(record: ExitRecord, run: Run, spec: JobSpec, rng: random.Random) -> AttemptEnd:
    base = AttemptEnd(
        attempt_state=AttemptState.EXITED,
        ended_at=record.ended_at,
        run_state=RunState.FAILED,
        reason=record.describe(),
        outcome="exit",
        exit_code=record.exit_code,
        signal=record.signal,
        peak_rss_kb=record.peak_rss_kb,
        pid=record.pid,
        started_at=record.started_at,
    )
    cancelled = record.killed_by == "cancel" or run.cancel_requested
    if record.error is not None:
        return replace(
            base,
            attempt_state=AttemptState.FAILED_TO_START,
            run_state=RunState.CANCELLED if cancelled else RunState.FAILED,
            outcome="not_started",
        )
    if cancelled:
        return replace(
            base,
            run_state=RunState.CANCELLED,
            reason=f"cancelled on request ({record.describe()})",
            outcome="cancel",
        )
    stopped = _stopped(record, base, run, spec, rng)
    if stopped is not None:
        return stopped
    if record.exit_code == 0:
        return replace(base, run_state=RunState.SUCCEEDED)
    return _maybe_retry(base, _trigger(record), run, spec, rng)


def _trigger(record: ExitRecord) -> int | str | None:
    """The retry_on item an end of the program's own answers to: its exit code, or the name
    of the signal it died of (its own kill, the kernel's: a limit, the OOM killer). A signal
    runyard sent (cancel, timeout, fence: decided before, or a reason this version does not
    know) answers to none. An exit code of 128+N (a shell telling of its child's death) is
    an exit code, never the signal N: the program chose it."""
    if record.exit_code is not None:
        return record.exit_code
    if record.signal is None or record.killed_by is not None:
        return None
    return signal_trigger(record.signal)


def _stopped(
    record: ExitRecord, base: AttemptEnd, run: Run, spec: JobSpec, rng: random.Random
) -> AttemptEnd | None:
    """The end of a program its supervisor stopped for a reason of its own, if it was."""
    if record.killed_by == "timeout":
        timed_out = replace(
            base,
            run_state=RunState.TIMED_OUT,
            # a record is data from outside: it may say "timeout" of a job without one
            reason=f"timed out after {spec.timeout_s:g}s ({record.describe()})"
            if spec.timeout_s is not None
            else f"timed out ({record.describe()})",
            outcome="timeout",
        )
        return _maybe_retry(timed_out, "timeout", run, spec, rng)
    if record.killed_by == "given_up":  # started after its spawn was given up on, and stopped
        why = "its spawn was answered after the server had given it up"
        return not_started(record.ended_at, why)
    if record.killed_by == "fenced":  # the supervisor stopped it: its server's lease lapsed
        lapsed = replace(base, attempt_state=AttemptState.LOST, outcome="lost",
                         reason="lost: lease lapsed (self-fenced)")  # fmt: skip
        return _maybe_retry(lapsed, "lost", run, spec, rng)
    return None


def lost(run: Run, spec: JobSpec, now: float, rng: random.Random, why: str) -> AttemptEnd:
    end = AttemptEnd(
        attempt_state=AttemptState.LOST,
        ended_at=now,
        run_state=RunState.FAILED,
        reason=f"lost: {why}",
        outcome="lost",
    )
    return _maybe_retry(end, "lost", run, spec, rng)


def cancelled_before_start(now: float) -> AttemptEnd:
    """Its run's cancel came while the attempt was prepared: its program was never started."""
    return AttemptEnd(
        attempt_state=AttemptState.FAILED_TO_START, ended_at=now, run_state=RunState.CANCELLED,
        reason="cancelled on request (before its program was started)", outcome="not_started",
    )  # fmt: skip


def not_started(now: float, why: str, retry_in_s: float = 0.0) -> AttemptEnd:
    """The attempt's program never ran (the server or supervisor stopped first): nothing was
    tried, so the run goes back to the queue whatever its retry policy says — claimable again
    after `retry_in_s` (an executor that refused now would refuse a claim made at once)."""
    return AttemptEnd(
        attempt_state=AttemptState.LOST,
        ended_at=now,
        run_state=RunState.QUEUED,
        reason=f"not started: {why}; re-queued",
        outcome="not_started",
        not_before=now + retry_in_s if retry_in_s > 0 else None,
    )
