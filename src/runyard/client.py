"""A small typed client for runyard's HTTP API (httpx). The CLI is built on it.

httpx is imported where a client is made, not with this module: importing httpx loads its
own command line (click, rich, pygments) too, a third of a second of CPU that `runyard serve`
and the quick commands, which import this module, do not need."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runyard.client_artifacts import ArtifactMethods
from runyard.client_files import not_file_params
from runyard.client_guards import (
    MAX_ERROR_TEXT,
    MAX_PAGES,
    ClientError,
    M,
    capped_client,
    digits,
    event_data,
    event_int,
    log_bytes,
    next_cursor,
    parsed,
    redirected,
    segment,
    valid,
)
from runyard.client_streams import sse_events
from runyard.models import RunState
from runyard.schedule_schemas import SchedulePage, ScheduleView
from runyard.schemas import (
    BatchPage,
    BatchView,
    JobList,
    JobView,
    RunPage,
    RunView,
    UploadView,
)

if TYPE_CHECKING:
    import ssl

    import httpx

UPLOAD_CHUNK = 1024 * 1024  # bytes read from disk and sent at a time

DEFAULT_SERVER = "http://127.0.0.1:8000"


class APIError(Exception):
    """A problem answer from the server (RFC 9457)."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        self.detail = str(problem.get("detail") or problem.get("title") or status)
        super().__init__(f"{status}: {self.detail}")


@dataclass(frozen=True, slots=True)
class LogStart:
    attempt: int


@dataclass(frozen=True, slots=True)
class LogPiece:
    end_offset: int  # resume point: the byte offset just after `data`
    data: bytes


@dataclass(frozen=True, slots=True)
class StreamEnd:
    """Why a stream stopped: `end` (data has the run's state), `lagged` or `shutdown`."""

    kind: str
    data: dict[str, Any]


class Client(ArtifactMethods):
    def __init__(
        self,
        server: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        """`verify` is httpx's: True builds a TLS context for this client (the CA bundle
        loaded, tens of ms of CPU); a program that makes many clients may pass one context to
        clients that no two threads use at once (httpcore sets its ALPN protocols for each
        connection it opens)."""
        server = server or os.environ.get("RUNYARD_SERVER") or DEFAULT_SERVER
        token = token or os.environ.get("RUNYARD_TOKEN")
        # nothing compressed: answers are capped by what they are, not what they inflate to
        headers = {"Accept-Encoding": "identity"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.http = capped_client()(
            base_url=server.rstrip("/"), headers=headers, timeout=timeout, transport=transport,
            verify=verify,
        )  # fmt: skip

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def _check(self, resp: httpx.Response) -> httpx.Response:
        """The answer if it is a 2xx; else APIError with its problem (a 3xx too: a runyard
        server never redirects, and the client follows none)."""
        if 300 <= resp.status_code < 400:
            raise APIError(resp.status_code, redirected(resp))
        if resp.status_code >= 400:
            try:
                problem = resp.json()
            except (ValueError, RecursionError):
                problem = {"detail": resp.content[:MAX_ERROR_TEXT].decode("utf-8", "replace")}
            raise APIError(resp.status_code, problem if isinstance(problem, dict) else {})
        return resp

    def _answer(self, model: type[M], resp: httpx.Response) -> M:
        """A 2xx answer as `model`; else APIError, or ClientError for one it cannot use."""
        return valid(model, parsed(self._check(resp)), resp.request.url.path)

    # -- jobs -------------------------------------------------------------------------------

    def jobs(self) -> JobList:
        return self._answer(JobList, self.http.get("/v1/jobs"))

    def job(self, name: str) -> JobView:
        return self._answer(JobView, self.http.get(f"/v1/jobs/{segment(name)}"))

    # -- runs -------------------------------------------------------------------------------

    def submit(
        self,
        job: str,
        params: dict[str, Any] | None = None,
        *,
        priority: int | None = None,
        labels: dict[str, str] | None = None,
        idempotency_key: str | None = None,
        wait: float | None = None,
    ) -> RunView:
        """Submit a run. With `wait`, the server holds the answer until the run ends or `wait`
        seconds pass (`Prefer: wait`): check `state` to know which."""
        params = self._uploaded(job, params or {})
        body: dict[str, Any] = {"job": job, "params": params, "labels": labels or {}}
        if priority is not None:
            body["priority"] = priority
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        timeout = self.http.timeout
        if wait:
            import httpx

            headers["Prefer"] = f"wait={wait:g}"
            timeout = httpx.Timeout(wait + 30.0)
        resp = self.http.post("/v1/runs", json=body, headers=headers, timeout=timeout)
        return self._answer(RunView, resp)

    def runs(
        self,
        *,
        job: str | None = None,
        state: RunState | str | None = None,
        labels: dict[str, str] | None = None,
        batch: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> RunPage:
        params: dict[str, Any] = {"limit": limit}
        for key, value in (("job", job), ("state", state), ("batch", batch), ("cursor", cursor)):
            if value is not None:
                params[key] = str(value)
        if labels:
            params["label"] = [f"{k}={v}" for k, v in labels.items()]
        return self._answer(RunPage, self.http.get("/v1/runs", params=params))

    def iter_runs(self, **filters: Any) -> Iterator[RunView]:
        cursor: str | None = None
        seen: set[str] = set()
        for _ in range(MAX_PAGES):
            page = self.runs(cursor=cursor, **filters)
            yield from page.runs
            if page.next_cursor is None:
                return
            cursor = next_cursor(page.next_cursor, seen)
        raise ClientError(f"more than {MAX_PAGES} pages of runs")

    def run(self, run_id: str) -> RunView:
        return self._answer(RunView, self.http.get(f"/v1/runs/{segment(run_id)}"))

    def cancel(self, run_id: str) -> RunView:
        return self._answer(RunView, self.http.post(f"/v1/runs/{segment(run_id)}/cancel"))

    def delete(self, run_id: str) -> None:
        self._check(self.http.delete(f"/v1/runs/{segment(run_id)}"))

    def logs(
        self, run_id: str, offset: int = 0, limit: int = 1024 * 1024, attempt: int | None = None
    ) -> tuple[bytes, int]:
        """A chunk of the log from `offset`, and the offset to ask for next."""
        params: dict[str, Any] = {"offset": offset, "limit": limit}
        if attempt is not None:
            params["attempt"] = attempt
        resp = self._check(self.http.get(f"/v1/runs/{segment(run_id)}/logs", params=params))
        after = offset + len(resp.content)
        if (told := resp.headers.get("X-Next-Offset")) is not None:
            after = digits(told, "the server's X-Next-Offset")
        if resp.content and after <= offset:  # a reader that never ends
            raise ClientError(f"the server's X-Next-Offset ({after}) does not move past {offset}")
        return resp.content, after

    # -- batches ----------------------------------------------------------------------------

    def batch(
        self,
        job: str,
        params: dict[str, Any] | None = None,
        *,
        iterations: int | None = None,
        sweep: dict[str, list[Any]] | None = None,
        priority: int | None = None,
        labels: dict[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> BatchView:
        """Create a batch. Sent again with the same `idempotency_key` (after a timeout, say),
        the batch that key made is answered and no run is made twice."""
        body: dict[str, Any] = {
            "job": job, "params": self._uploaded(job, params or {}), "labels": labels or {},
        }  # fmt: skip
        for key, value in (("iterations", iterations), ("sweep", sweep), ("priority", priority)):
            if value is not None:
                body[key] = value
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._answer(BatchView, self.http.post("/v1/batches", json=body, headers=headers))

    def upload(
        self, path: Path, name: str | None = None, progress: Callable[[int], None] | None = None
    ) -> UploadView:
        """Upload a file (streamed from disk); its `ref` is what a file param takes
        (`upload:ID/NAME`, NAME this upload's). The same bytes uploaded twice are stored
        once. `progress` is told the bytes sent after each chunk."""
        with path.open("rb") as fh:
            size = os.fstat(fh.fileno()).st_size

            def chunks() -> Iterator[bytes]:
                while chunk := fh.read(UPLOAD_CHUNK):
                    yield chunk
                    if progress is not None:
                        progress(len(chunk))

            resp = self.http.put(
                "/v1/uploads", params={"name": name or path.name}, content=chunks(),
                headers={"Content-Length": str(size)},  # refused at once when over the cap
            )  # fmt: skip
        return self._answer(UploadView, resp)

    def delete_upload(self, upload_id: str) -> None:
        """Remove an upload nothing uses (the `admin` role); 409 while a run or a schedule
        does."""
        self._check(self.http.delete(f"/v1/uploads/{segment(upload_id)}"))

    def check_files(self, job: str, params: dict[str, Any]) -> None:
        """ClientError unless each `Path` value is for a file param of `job` (client_files.py)."""
        files = [k for k, v in params.items() if isinstance(v, Path)]
        if files and (wrong := not_file_params(self.job(job).params_schema, files)):
            raise ClientError(f"job {job!r} has no file param {wrong[0]!r}: only a file param "
                              "takes a file (a value starting with @ is written @@)")  # fmt: skip

    def _uploaded(self, job: str, params: dict[str, Any]) -> dict[str, Any]:
        """Params with each `Path` value uploaded first and replaced by its `ref`
        (`upload:ID/NAME`: the run sees the file under the path's own name)."""
        self.check_files(job, params)
        return {k: self.upload(v).ref if isinstance(v, Path) else v for k, v in params.items()}

    def batches(self, *, cursor: str | None = None, limit: int = 20) -> BatchPage:
        """Batches, newest first, a page at a time (`next_cursor` for the next one)."""
        params: dict[str, Any] = {"limit": limit}
        if cursor is not None:  # as `runs`: an empty one is the server's to refuse
            params["cursor"] = cursor
        return self._answer(BatchPage, self.http.get("/v1/batches", params=params))

    def get_batch(self, batch_id: str) -> BatchView:
        return self._answer(BatchView, self.http.get(f"/v1/batches/{segment(batch_id)}"))

    def cancel_batch(self, batch_id: str) -> BatchView:
        return self._answer(BatchView, self.http.post(f"/v1/batches/{segment(batch_id)}/cancel"))

    # -- schedules --------------------------------------------------------------------------

    def create_schedule(
        self, job: str, params: dict[str, Any] | None = None, **fields: Any
    ) -> ScheduleView:
        """`fields`: cron or interval_s, and optionally overlap, catch_up, paused, priority."""
        body = {"job": job, "params": params or {}, **fields}
        return self._answer(ScheduleView, self.http.post("/v1/schedules", json=body))

    def schedules(self) -> list[ScheduleView]:
        """Every schedule, page after page."""
        found: list[ScheduleView] = []
        cursor: str | None = None
        seen: set[str] = set()
        for _ in range(MAX_PAGES):
            query: dict[str, str | int] = {"limit": 500}
            if cursor is not None:
                query["cursor"] = cursor
            page = self._answer(SchedulePage, self.http.get("/v1/schedules", params=query))
            found += page.schedules
            if page.next_cursor is None:
                return found
            cursor = next_cursor(page.next_cursor, seen)
        raise ClientError(f"more than {MAX_PAGES} pages of schedules")

    def update_schedule(self, schedule_id: str, **changes: Any) -> ScheduleView:
        resp = self.http.patch(f"/v1/schedules/{segment(schedule_id)}", json=changes)
        return self._answer(ScheduleView, resp)

    def delete_schedule(self, schedule_id: str) -> None:
        self._check(self.http.delete(f"/v1/schedules/{segment(schedule_id)}"))

    # -- streams ----------------------------------------------------------------------------

    def stream_log(
        self, run_id: str, *, attempt: int | None = None, offset: int = 0, retries: int = 5
    ) -> Iterator[LogStart | LogPiece | StreamEnd]:
        """LogStart (which attempt), the attempt's log as it grows (bytes, exactly), then a
        StreamEnd. A dropped connection is resumed from the last offset (Last-Event-ID) of the
        same attempt: no gap, no repeat."""
        url = f"/v1/runs/{segment(run_id)}/logs/stream"
        params: dict[str, Any] = {"attempt": attempt} if attempt else {}
        if offset:
            params["offset"] = offset  # then the ids it is sent (ATTEMPT:OFFSET past attempt 1)
        for sse in sse_events(self.http, self._check, url, params, "", retries):
            if sse.event == "attempt":
                params["attempt"] = event_int(sse.data, "attempt", "attempt")  # pinned from now
                yield LogStart(params["attempt"])
            elif sse.event in ("log", "log.b64"):
                yield LogPiece(
                    digits(sse.id.rpartition(":")[2], "a log event's id"),
                    log_bytes(sse.event, sse.data),
                )
            elif sse.event in ("end", "lagged", "shutdown"):
                yield StreamEnd(sse.event, event_data(sse.data, sse.event))
                return

    def stream_events(
        self, run_id: str, *, after: int = 0, retries: int = 5
    ) -> Iterator[dict[str, Any] | StreamEnd]:
        """State changes and progress of a run ({seq, at, kind, data}), then a StreamEnd."""
        for sse in sse_events(
            self.http, self._check, f"/v1/runs/{segment(run_id)}/events", {}, str(after), retries
        ):
            if sse.event in ("state", "progress"):
                yield event_data(sse.data, sse.event)
            elif sse.event in ("end", "lagged", "shutdown"):
                yield StreamEnd(sse.event, event_data(sse.data, sse.event))
                return
