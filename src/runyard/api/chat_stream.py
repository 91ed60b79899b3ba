"""A streamed chat completion: the run's log as `chat.completion.chunk` events while it is
written, a last chunk with `finish_reason`, then `data: [DONE]` — or an error event that the
`openai` SDK raises as an `APIError`. Keep-alive comments come from the SSE response itself
while the run queues or the program thinks (api/sse.py's `sse_response`)."""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from sse_starlette import ServerSentEvent

from runyard.api import openai_errors
from runyard.api.deps import LogFollower
from runyard.api.openai_schemas import chunk, usage
from runyard.errors import RunyardError
from runyard.models import Run, RunState
from runyard.services.chat import MAX_ANSWER_BYTES, ChatService, answer_file_of, describe_end
from runyard.streams.subscriber import Chunk, Closed, End, Following, Lagged


@dataclass(frozen=True, slots=True)
class StreamPlan:
    run: Run
    model: str
    prompt: str  # the conversation as text: what usage estimates
    include_usage: bool
    cancel_on_disconnect: bool


def _data(payload: dict[str, Any]) -> ServerSentEvent:
    return ServerSentEvent(data=json.dumps(payload, ensure_ascii=False))


def _error(status: int, message: str, code: str | None) -> ServerSentEvent:
    return _data(openai_errors.body(status, message, None, code))


def fell_behind(chat: ChatService, run: Run) -> Callable[[str | None], ServerSentEvent]:
    """The last event to a client that did not take the stream in time (it is then dropped):
    the run is not this connection's; asked again, the answer comes from the same run."""

    def dropped(_: str | None) -> ServerSentEvent:
        chat.ask_again(run)
        message = "this client did not read the stream in time and was dropped; ask again"
        return _error(408, message, "lagged")

    return dropped


class _Completion:
    """One streamed completion: the live part (the log as it is written), then its end."""

    def __init__(self, chat: ChatService, follow_log: LogFollower, plan: StreamPlan) -> None:
        self.chat, self.follow_log, self.plan = chat, follow_log, plan
        self.cid, self.created = f"chatcmpl-{plan.run.id}", int(plan.run.created_at)
        self.live = answer_file_of(plan.run) is None  # else the answer is a file, at the end
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.sent: list[str] = []
        self.offset = 0
        self.attempt: int | None = None  # the one streamed: pinned once followed
        self.closed = False
        self.rewritten = False  # the program cut its log back: what was sent is not the log

    def piece(self, delta: dict[str, Any], finish: str | None = None) -> ServerSentEvent:
        return _data(chunk(self.cid, self.created, self.plan.model, delta, finish))

    def _text(self, item: Chunk) -> str:
        if not self.live or self.offset >= MAX_ANSWER_BYTES:
            return ""
        text = self.decoder.decode(item.data[: MAX_ANSWER_BYTES - self.offset])
        self.sent.append(text)
        return text

    async def follow(self) -> AsyncIterator[ServerSentEvent]:
        """The log's text as content deltas, up to the attempt's end (or the server's)."""
        lagged = True
        while lagged:  # a watcher that fell behind resumes from where it was
            lagged = False
            async for item in self.follow_log(self.plan.run.id, self.attempt, self.offset):
                if isinstance(item, Following):
                    self.attempt = item.attempt  # resumed, the same attempt, not a retry's
                elif isinstance(item, Chunk):
                    text = self._text(item)
                    self.offset = item.end
                    if text:
                        yield self.piece({"content": text})
                elif isinstance(item, Lagged) and item.last_id < self.offset:
                    self.rewritten = True  # read again from its start: not what was sent
                    break
                elif isinstance(item, Lagged):
                    self.offset, lagged = item.last_id, True
                elif isinstance(item, Closed):
                    self.closed = True
                elif isinstance(item, End):
                    break

    async def finish(self) -> AsyncIterator[ServerSentEvent]:
        """The last content, the finishing chunk, usage and [DONE]; or an error event."""
        if self.closed:
            self.chat.ask_again(self.plan.run)
            yield _error(503, "the server is shutting down; the run goes on: ask again", "closed")
            return
        # an attempt that ended with a retry to come is not the end of the run
        final = await self.chat.until_end(self.plan.run)
        if not final.state.terminal:  # the server began to shut down meanwhile
            yield _error(503, "the server is shutting down; the run goes on: ask again", "closed")
            return
        if final.state is not RunState.SUCCEEDED:
            yield _error(500, describe_end(final), final.state.value)
            return
        if self.live and (self.rewritten or final.attempt != self.attempt):
            # what was sent is not the answer: an attempt that failed and was retried (its
            # output is not the successful one's), or a log its program rewrote meanwhile
            why = (
                "the program rewrote its output while it was streamed"
                if self.rewritten
                else f"the attempt streamed failed and the run was retried: attempt "
                f"{final.attempt} succeeded"
            )
            self.chat.ask_again(final)
            yield _error(500, f"{why}; ask again for the answer (the same run's)", "retried")
            return
        reason = "length" if self.offset > MAX_ANSWER_BYTES else "stop"
        if self.live:
            # cut: the bytes still held are a character the cut split, dropped as the plain
            # answer drops it (decoded, they were a U+FFFD the program never wrote)
            tail = "" if reason == "length" else self.decoder.decode(b"", final=True)
        else:
            try:
                answer = await self.chat.answer(final)
            except RunyardError as exc:
                yield _error(500, exc.detail, "no_answer")
                return
            tail, reason = answer.text, "length" if answer.truncated else "stop"
        if tail:
            self.sent.append(tail)
            yield self.piece({"content": tail})
        yield self.piece({}, reason)
        if self.plan.include_usage:
            spent = usage(self.plan.prompt, "".join(self.sent)).model_dump()
            empty = chunk(self.cid, self.created, self.plan.model, {}, None)
            yield _data({**empty, "choices": [], "usage": spent})
        yield ServerSentEvent(data="[DONE]")


async def completion_events(
    chat: ChatService, follow_log: LogFollower, plan: StreamPlan
) -> AsyncIterator[ServerSentEvent]:
    completion = _Completion(chat, follow_log, plan)
    done = False
    with chat.callers.waiting(plan.run.id) as alone:
        try:
            yield completion.piece({"role": "assistant", "content": ""})
            async for event in completion.follow():
                yield event
            async for event in completion.finish():
                yield event
            done = True
        finally:
            if not done and plan.cancel_on_disconnect and alone():
                # the caller went away, no retry of it waits on the run, and the job asks
                # for its run to go too
                with contextlib.suppress(RunyardError):
                    await asyncio.shield(chat.runs.cancel(plan.run.id))
