"""Chat completions as runs: a job that declares `[openai]` answers to a model id; a
conversation becomes one run of it, and the run's output becomes the answer (docs/openai.md).

A call that is retried (by the `openai` SDK after a lost connection, a timeout, a 429 or a
5xx) must attach to the run its first try started, never start a second one. An explicit
`Idempotency-Key` does that through the key runs already have. The SDK sends no key, but
every retry says it is one (`x-stainless-retry-count: N`, N >= 1) and repeats the request
exactly; so each run started by a chat call is labelled with a digest of who asked and what
(the caller, the model, the conversation), and a retry attaches to the newest run with the
same digest that is still going or ended at most `RETRY_WINDOW_S` ago. A first try
(count 0 or absent) always starts a run: two identical questions asked one after the other
get two runs. See docs/openai.md for what this cannot tell apart.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runyard.bounds import text_problem
from runyard.errors import InvalidInputError, NotFoundError, RunyardError
from runyard.jobs import JobRegistry
from runyard.jobs.chat import OpenAIOptions
from runyard.jobs.spec import Job
from runyard.models import Run, RunFilter, RunState
from runyard.services.artifacts import open_artifact
from runyard.services.runs import RunService

MAX_ANSWER_BYTES = 4 * 1024 * 1024
RETRY_WINDOW_S = 600.0  # the SDK's whole retry sequence, its timeouts included, fits well
MAX_ASKED_BACK = 10_000  # streams told to ask again, remembered (ask_again)
DIGEST_LABEL = "openai.request"
MODEL_LABEL = "openai.model"
# The roles a message may have (api/openai_schemas.py ChatMessage.role, checked by a test).
ROLES = ("system", "developer", "user", "assistant", "tool")
# A content line that a reader could take for the start of a message (`format = "text"`):
# backslashes, a role (ASCII case-insensitive), a colon, just after a line break as
# str.splitlines() breaks lines: LF, CR (and CR LF), and the rarer ones a Python reader splits
# at too. Never the content's first line, which follows `role: ` on the message's own line.
_BREAK = r"[\n\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029]"
_MARKER = rf"\\*(?:{'|'.join(ROLES)}):"
_TO_ESCAPE = re.compile(rf"(?<={_BREAK})(?={_MARKER})", re.IGNORECASE | re.ASCII)
_ESCAPED = re.compile(rf"(?<={_BREAK})\\(?={_MARKER})", re.IGNORECASE | re.ASCII)


class AskedBack:
    """The streams that ended telling their caller to ask again, by the digest of the call
    (ChatService.ask_again): one for the server, the ChatService being one per request."""

    def __init__(self, most: int = MAX_ASKED_BACK) -> None:
        self.most = most
        self._told: dict[str, tuple[str, float]] = {}  # digest -> (run id, until)

    def told(self, digest: str, run_id: str, until: float) -> None:
        self._told.pop(digest, None)
        self._told[digest] = (run_id, until)
        while len(self._told) > self.most:  # the oldest first: insertion order
            del self._told[next(iter(self._told))]

    def taken(self, digest: str) -> tuple[str, float] | None:
        return self._told.pop(digest, None)


class Callers:
    """The chat calls waiting on each run (one registry for the server): a job that cancels
    its run when its caller goes cancels it only when the last of them goes. The SDK retries
    a call that timed out at once, and the server hears of the first try's going only when
    its connection closes: the retry had attached to the run by then, and the first try's
    going cancelled it under the retry, answered `cancelled` (a probe)."""

    def __init__(self) -> None:
        self._waiting: dict[str, int] = {}

    @contextlib.contextmanager
    def waiting(self, run_id: str) -> Iterator[Callable[[], bool]]:
        """While the block runs, this call waits on `run_id`; what it yields says whether
        it is the only one that does."""
        self._waiting[run_id] = self._waiting.get(run_id, 0) + 1
        try:
            yield lambda: self._waiting.get(run_id, 0) <= 1
        finally:
            left = self._waiting[run_id] - 1
            if left:
                self._waiting[run_id] = left
            else:
                del self._waiting[run_id]


@dataclass(frozen=True, slots=True)
class Message:
    role: str
    content: str
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    text: str
    truncated: bool  # cut at MAX_ANSWER_BYTES: finish_reason "length"


class RunEndedBadlyError(RunyardError):
    """The run behind a chat completion did not succeed."""

    status, title, slug = 500, "Run did not succeed", "run-failed"


def render_text(messages: list[Message]) -> str:
    """The conversation as text: one 'role: content' paragraph per message, each content
    line that begins like a message escaped (escape_content): a caller's content can never
    pass for a message of another role (a probe forged a system message that way)."""
    return "\n\n".join(f"{m.role}: {escape_content(m.content)}" for m in messages)


def escape_content(content: str) -> str:
    """One more leading backslash on each line (but the first) that begins with backslashes,
    a role and a colon: `user: x` becomes `\\user: x`, `\\user: x` becomes `\\\\user: x`."""
    return _TO_ESCAPE.sub(r"\\", content)


def unescape_content(content: str) -> str:
    """escape_content undone, exactly: one backslash less on each such line."""
    return _ESCAPED.sub("", content)


def render_json(messages: list[Message]) -> list[dict[str, str]]:
    out = []
    for m in messages:
        item = {"role": m.role, "content": m.content}
        if m.name is not None:
            item["name"] = m.name
        out.append(item)
    return out


def request_digest(principal: str, model: str, messages: list[Message]) -> str:
    canonical = json.dumps(
        [principal, model, render_json(messages)], separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:40]


def estimate_tokens(text: str) -> int:
    """About four characters a token: what `usage` reports (an estimate, never billed)."""
    return (len(text) + 3) // 4


class ChatService:
    def __init__(
        self,
        runs: RunService,
        registry: JobRegistry,
        workspace_of: Callable[[str], Path],
        now: Callable[[], float],
        asked_back: AskedBack | None = None,
        callers: Callers | None = None,
    ) -> None:
        self.runs = runs
        self.registry = registry
        self.workspace_of = workspace_of  # where a run's program wrote its files
        self.now = now
        self.asked_back = asked_back if asked_back is not None else AskedBack()
        self.callers = callers if callers is not None else Callers()

    async def models(self) -> list[tuple[str, Job]]:
        snap = await self.registry.snapshot()
        found = [
            (job.spec.openai.model_id(name), job)
            for name, job in snap.jobs.items()
            if job.spec.openai is not None
        ]
        return sorted(found, key=lambda pair: pair[0])

    async def job_for(self, model: str) -> Job:
        for model_id, job in await self.models():
            if model_id == model:
                return job
        raise NotFoundError(f"the model {model!r} does not exist", field="model")

    async def start(
        self,
        job: Job,
        messages: list[Message],
        *,
        principal: str,
        idempotency_key: str | None,
        retried: bool,
    ) -> tuple[Run, bool]:
        """(run, created): a new run of `job` for the conversation, or the one this same
        request started already (by its key, or as a retry: see the module's docstring)."""
        chat = job.spec.openai
        assert chat is not None  # noqa: S101  job_for only gives jobs that opted in
        model = chat.model_id(job.name)
        _check_contents(messages)
        digest = request_digest(principal, model, messages)
        if idempotency_key is None:
            earlier = (
                await self._earlier(job.name, digest)
                if retried
                else await self._asked_again(digest)
            )
            # not a run its caller's going away cancelled, when the job cancels such a run:
            # the call asking again is that caller still asking (answered the cancellation
            # for ten minutes, its first try's doing)
            if earlier is not None and not (
                chat.cancel_on_disconnect
                and (earlier.state is RunState.CANCELLED or earlier.cancel_requested)
            ):
                return earlier, False
        value: Any = render_text(messages) if chat.format == "text" else render_json(messages)
        try:
            return await self.runs.submit(
                job.name, {chat.input: value}, labels={MODEL_LABEL: model, DIGEST_LABEL: digest},
                idempotency_key=idempotency_key,
            )  # fmt: skip
        except InvalidInputError as exc:
            # the job's own bound on its param (max_length) is a bound on the conversation;
            # said without the param's name, which is the job's business, not the caller's
            raise InvalidInputError(
                f"the conversation does not fit model {model!r}: {_misfit(exc)}",
                field="messages",
            ) from None

    async def _earlier(self, job: str, digest: str) -> Run | None:
        """The run a retry attaches to: the newest of the same call, going or recent."""
        page = await self.runs.list(RunFilter(job=job, labels=((DIGEST_LABEL, digest),), limit=1))
        if not page.runs:
            return None
        run = page.runs[0]
        if run.state.terminal and (run.finished_at or 0) < self.now() - RETRY_WINDOW_S:
            return None
        return run

    def ask_again(self, run: Run) -> None:
        """A stream ended telling its caller to ask again for the run's answer (its attempt
        was retried, it fell behind, the server closed it): the same question from the same
        caller, asked again here within RETRY_WINDOW_S, attaches to `run` once. The SDK sends
        that call as a first try (no retry count, no key), which started a second run."""
        digest = run.labels.get(DIGEST_LABEL)
        if digest is not None:
            self.asked_back.told(digest, run.id, self.now() + RETRY_WINDOW_S)

    async def _asked_again(self, digest: str) -> Run | None:
        told = self.asked_back.taken(digest)
        if told is None or told[1] < self.now():
            return None
        try:
            return await self.runs.get(told[0])
        except NotFoundError:  # deleted meanwhile
            return None

    async def until_end(self, run: Run) -> Run:
        """The run once it has ended; or, once the server is shutting down, as it is then
        (not ended: its caller answers that the run goes on). Its end is expected before the
        run is read again, so an end between that read and the wait is never missed."""
        while not run.state.terminal:
            with self.runs.waiters.expecting(run.id) as ended:
                run = await self.runs.get(run.id)
                if run.state.terminal:
                    break
                found = await ended
            run = found if found is not None else await self.runs.get(run.id)
            if self.runs.waiters.released:
                break  # nothing will tell of its end any more
        return run

    async def answer(self, run: Run) -> Answer:
        """The answer of a run that succeeded: its log, or the file its job names (as the
        job was when the run was submitted: the run's own copy of it)."""
        if run.state is not RunState.SUCCEEDED:
            raise RunEndedBadlyError(describe_end(run), code=run.state.value, run_id=run.id)
        path = answer_file_of(run)
        if path is None:
            data, _, size = await self.runs.read_log(run.id, None, 0, MAX_ANSWER_BYTES)
            return _cut(data, size > len(data))
        workspace: Path = self.workspace_of(run.id)
        return await asyncio.to_thread(_read_answer_file, workspace, path)


def _check_contents(messages: list[Message]) -> None:
    """Refuses, naming the message, what every param refuses in free text (a control
    character other than tab, LF and CR): the job's param would refuse the whole
    conversation, named by the param (the job's), not by the message (the caller's)."""
    for i, message in enumerate(messages):
        why = text_problem(message.content, multiline=True)
        if why is not None:
            field = f"messages.{i}.content"
            raise InvalidInputError(f"{field}: {why}", field=field)


def _misfit(exc: InvalidInputError) -> str:
    """Why the conversation does not fit the job's param, without the param's name."""
    errors = exc.extra.get("errors")
    if not isinstance(errors, list) or not errors:
        return exc.detail
    return "; ".join(str(message) for _, message in errors[:10])


def answer_file_of(run: Run) -> str | None:
    """The answer file the run's job named when it was submitted (None: its log)."""
    table = run.spec.get("openai")
    return OpenAIOptions.model_validate(table).answer_file if table else None


def describe_end(run: Run) -> str:
    """`run ID failed: exit code 7`: the reason says the exit code when it is one (it was
    said twice, `failed with exit code 7: exit code 7`)."""
    how = f"run {run.id} {run.state.value}"
    if run.reason:
        return f"{how}: {run.reason}"
    return f"{how} with exit code {run.exit_code}" if run.exit_code is not None else how


def _read_answer_file(workspace: Path, path: str) -> Answer:
    """Blocking. The answer file as a plain file inside the workspace (never through a
    symlink or a hard link), its first MAX_ANSWER_BYTES."""
    try:
        opened = open_artifact(workspace, path, [path])
    except RunyardError as exc:
        raise RunEndedBadlyError(
            f"the run succeeded but its answer file is unusable: {exc.detail}", code="no_answer"
        ) from None
    try:
        with os.fdopen(opened.fd, "rb") as fh:
            data = fh.read(MAX_ANSWER_BYTES + 1)
    except OSError as exc:
        raise RunEndedBadlyError(
            f"the answer file {path!r} cannot be read: {exc.strerror}", code="no_answer"
        ) from None
    return _cut(data[:MAX_ANSWER_BYTES], len(data) > MAX_ANSWER_BYTES)


def _cut(data: bytes, truncated: bool) -> Answer:
    """The answer's text; cut at its bound, it ends before a character the cut would split:
    not a U+FFFD the program never wrote, and the same from its log or a file, plain or
    streamed: read as the stream reads it, by an incremental decoder, whose held bytes are
    dropped at the cut. A rule of its own that looked past the cut, or at whether the text
    was UTF-8 throughout, disagreed with the stream about output holding invalid bytes (a
    re-probe: a character dropped, or a U+FFFD the stream did not send)."""
    if not truncated:
        return Answer(data.decode("utf-8", errors="replace"), False)
    # what an incremental decoder holds back at the end is the character the cut split
    return Answer(codecs.getincrementaldecoder("utf-8")(errors="replace").decode(data), True)
