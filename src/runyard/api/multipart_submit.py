"""`POST /v1/runs` as `multipart/form-data`: the run and its files in one request, for a form
or curl (`curl -F run='{"job": "cad"}' -F model=@part.step`).

The part named `run` is the JSON a plain submit sends (capped at max_body_kb); every other part
is the file of the file param it is named for, streamed to the uploads as it arrives
(services/uploads; hashed, capped and never held whole), so the run names it `upload:ID` as if
it had been uploaded first. The role is checked before a byte is read. A request that fails —
a malformed or cut body, a part over a limit, a run refused — keeps none of the files it
brought: an upload it created that no run uses is removed at once.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator

from pydantic import ValidationError
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect, HTTPConnection, Request
from starlette.types import Receive, Scope, Send

from runyard import upload_refs
from runyard.api.deps import relay_signer, runtime_of
from runyard.api.inputs import (
    IDEMPOTENCY_KEY_PATTERN,
    MAX_FORM_PARTS,
    MAX_PART_NAME,
    is_form_data,
    one_idempotency_key,
)
from runyard.api.json_body import SMALL_BODY, UnsupportedMediaTypeError, as_it_is, read_json
from runyard.api.multipart_heads import TWICE, BadMultipartError, plain_part
from runyard.api.problems import FORM_FILES, UnreadBodyValidationError, client_left
from runyard.api.routes.runs import answer_submit, prefer_of, prefer_wait
from runyard.api.routes.uploads import close_after
from runyard.api.security import authorize
from runyard.auth import Role
from runyard.bounds import PARAM_NAME_PATTERN, text_problem
from runyard.errors import InvalidInputError, NotFoundError, RunyardError
from runyard.jobs import JobRegistry
from runyard.jobs.spec import Job
from runyard.schemas import SubmitRequest
from runyard.services.uploads import Incoming, Upload, Uploads, UploadTooLargeError, safe_name

RUN_PART = "run"
MAX_EPILOGUE = 1024  # after the closing boundary: a line break is usual, nothing more
IDEMPOTENCY_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN)

_PARAM_NAME = re.compile(PARAM_NAME_PATTERN)
_BOUNDARY_PARAM = re.compile(r";\s*boundary\s*=", re.IGNORECASE)


def is_multipart(headers: Headers) -> bool:
    return is_form_data(headers.get("content-type", ""))


def _boundary(headers: Headers) -> bytes:
    """The body's boundary, as one reading of the head gives it: readers that differ on which
    of two Content-Type lines, or of two boundaries, counts would parse two different forms
    from one body (as for a JSON key given twice)."""
    types = headers.getlist("content-type")
    if len(types) != 1:
        raise UnsupportedMediaTypeError(
            "a form is sent with one Content-Type: multipart/form-data", field="header.Content-Type"
        )
    as_it_is(headers)
    if len(_BOUNDARY_PARAM.findall(types[0])) > 1:
        raise BadMultipartError("Content-Type names its boundary more than once")
    _, options = parse_options_header(types[0])
    boundary = options.get(b"boundary")
    if not boundary or len(boundary) > 70:
        raise BadMultipartError("Content-Type multipart/form-data needs a boundary (1-70 chars)")
    return boundary


class _Events:
    """The parser's callbacks, collected per chunk fed so they can be handled with awaits."""

    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []
        self.finished = False
        self._headers: dict[str, bytes] = {}
        self._field = bytearray()
        self._value = bytearray()

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self._headers.clear,
            "on_header_field": lambda d, s, e: self._field.extend(d[s:e]),
            "on_header_value": lambda d, s, e: self._value.extend(d[s:e]),
            "on_header_end": self._header_end,
            "on_headers_finished": lambda: self.events.append(("part", dict(self._headers))),
            "on_part_data": lambda d, s, e: self.events.append(("data", bytes(d[s:e]))),
            "on_part_end": lambda: self.events.append(("end", None)),
            "on_end": self._end,
        }

    def _header_end(self) -> None:
        name = self._field.decode("latin-1").lower()
        if name in self._headers:  # readers differ on which line counts: refused (_begin)
            self._headers.setdefault(TWICE, name.encode("latin-1"))
        self._headers[name] = bytes(self._value)
        self._field.clear()
        self._value.clear()

    def _end(self) -> None:
        self.finished = True

    def take(self) -> list[tuple[str, object]]:
        taken, self.events = self.events, []
        return taken


class _Form:
    """What one multipart body held: the run's JSON and the uploads of its files."""

    def __init__(self, uploads: Uploads, registry: JobRegistry, max_run_bytes: int) -> None:
        self.uploads = uploads
        self.registry = registry
        self.max_run_bytes = max_run_bytes
        self.request: SubmitRequest | None = None
        self.job: Job | None = None  # once the run is read: its file parts checked as they come
        self._cap: int | None = None  # the bytes the file part being read may have
        self.run: bytearray | None = None
        self.files: dict[str, Upload] = {}
        self.names: dict[str, str] = {}  # each file's name, as this request gave it (made safe)
        self.created: list[str] = []  # uploads this request stored first (removed on failure)
        self.parts = 0
        self._name = ""
        self._filename: str | None = None
        self._buffer: bytearray | None = None
        self._incoming: Incoming | None = None

    async def read(self, chunks: AsyncIterator[bytes], boundary: bytes) -> None:
        events = _Events()
        parser = MultipartParser(boundary, events.callbacks())  # type: ignore[arg-type]
        closing = b"\r\n--" + boundary + b"--"
        after_end = 0  # bytes of epilogue: the parser drops them, whatever their number
        async for chunk in chunks:
            if events.finished:
                after_end += len(chunk)
            else:
                try:
                    parser.write(chunk)
                except MultipartParseError as exc:
                    if not self.parts:  # python-multipart's words for it were cryptic
                        raise BadMultipartError(
                            "malformed multipart body: it must begin with its first boundary "
                            f"(a preamble before it is not taken): {exc}"
                        ) from None
                    raise BadMultipartError(f"malformed multipart body: {exc}") from None
                for kind, value in events.take():
                    await self.handle(kind, value)
                if events.finished and (at := chunk.find(closing)) >= 0:
                    after_end = len(chunk) - at - len(closing)
            if after_end > MAX_EPILOGUE:
                raise BadMultipartError(
                    f"more than {MAX_EPILOGUE} bytes after the closing boundary"
                )
        if not events.finished:
            raise BadMultipartError("the multipart body ended before its closing boundary")

    async def handle(self, kind: str, value: object) -> None:
        if kind == "part":
            await self._begin(value)  # type: ignore[arg-type]
        elif kind == "data":
            await self._data(value)  # type: ignore[arg-type]
        else:
            await self._end()

    async def _begin(self, headers: dict[str, bytes]) -> None:
        self.parts += 1
        if self.parts > MAX_FORM_PARTS:
            raise BadMultipartError(f"more than {MAX_FORM_PARTS} parts (the run and its files)")
        plain_part(headers)
        disposition, options = parse_options_header(headers.get("content-disposition", b""))
        if disposition != b"form-data" or b"name" not in options:
            raise BadMultipartError("every part needs Content-Disposition: form-data; name=...")
        self._name = options[b"name"].decode("utf-8", "replace")
        if self._name != RUN_PART and not _PARAM_NAME.fullmatch(self._name):
            # never echoed as it came (a NUL, a control character) in `field` or `detail`
            shown = ascii(self._name[:MAX_PART_NAME])
            raise InvalidInputError(
                f"a part is named {shown}: a part's name is `run` or a file param's name "
                f"({PARAM_NAME_PATTERN})", field="params",
            )  # fmt: skip
        if self._name == RUN_PART:  # a field, or a file (curl -F run=@run.json): JSON either way
            if self.run is not None:
                raise InvalidInputError("the part 'run' is given twice", field=RUN_PART)
            self.run = self._buffer = bytearray()
            return
        # any other part is the file of the param it is named for (the run's job says, once
        # it is known, whether there is such a param)
        field = f"params.{self._name}"
        if self._name in self.files:
            raise InvalidInputError(f"file part {self._name!r} is given twice", field=field)
        filename = options.get(b"filename")
        # the rule of PUT /v1/uploads?name=: the name as given is shown back, so it is text,
        # and UTF-8 (decoded with replacement, bytes that were not became U+FFFD, stored)
        try:
            self._filename = self._name if not filename else filename.decode()
        except UnicodeDecodeError:
            raise InvalidInputError(
                f"file part {self._name!r}: its filename is not UTF-8", field=field
            ) from None
        if filename and (why := text_problem(self._filename, multiline=False)) is not None:
            raise InvalidInputError(f"file part {self._name!r}: its filename: {why}", field=field)
        self._cap = self._check_part(self._name) if self.job is not None else None
        self._incoming = await self.uploads.open()

    async def _data(self, data: bytes) -> None:
        if self._incoming is not None:
            field = f"params.{self._name}"
            if self._cap is not None and self._incoming.size + len(data) > self._cap:
                raise UploadTooLargeError(
                    f"file part {self._name!r} is over its param's max_mb "
                    f"({self._cap / 2**20:g})", field=field, limit_bytes=self._cap,
                )  # fmt: skip
            try:
                await self._incoming.write(data)
            except UploadTooLargeError as exc:
                raise UploadTooLargeError(exc.detail, field=field, **exc.extra) from None
        elif self._buffer is not None:
            self._buffer.extend(data)
            if len(self._buffer) > self.max_run_bytes:
                raise InvalidInputError(
                    f"the part 'run' is over the limit of {self.max_run_bytes // 1024} KiB "
                    "(max_body_kb)", field=RUN_PART,
                )  # fmt: skip

    async def _end(self) -> None:
        incoming, self._incoming, self._buffer = self._incoming, None, None
        if incoming is not None:
            upload, new = await self.uploads.keep(incoming, self._filename or "upload", fresh=True)
            self.files[self._name] = upload
            self.names[self._name] = safe_name(self._filename or "upload")
            if new:
                self.created.append(upload.id)
        elif self._name == RUN_PART:  # the run is known: the files are checked as they come
            await self._know_job()

    async def _know_job(self) -> None:
        if self.run is None:
            raise InvalidInputError(
                "no part 'run': send the run as JSON in a part named 'run'", field=RUN_PART
            )
        run = bytes(self.run)
        try:  # UTF-8, no key twice: as a JSON body is read (a large one off the event loop)
            value = (
                read_json(run)
                if len(run) <= SMALL_BODY
                else await asyncio.to_thread(read_json, run)
            )
        except json.JSONDecodeError:
            value = None  # pydantic's reader names where, below
        except RunyardError as exc:
            field = exc.extra.get("field", "body").replace("body", f"body.{RUN_PART}", 1)
            raise InvalidInputError(f"the part 'run': {exc.detail}", field=field) from None
        try:
            # the value as read, validated as the JSON submit's is (a lone surrogate in a
            # string is the param's to refuse, by name, not an unreadable part)
            self.request = (
                SubmitRequest.model_validate_json(run)
                if value is None
                else SubmitRequest.model_validate(value)
            )
        except ValidationError as exc:
            raise UnreadBodyValidationError(  # the files behind it are not read on
                [{**e, "loc": ("body", RUN_PART, *e["loc"])} for e in exc.errors()]
            ) from None
        self.job = await self.registry.get(self.request.job)
        if self.job is None:
            raise NotFoundError(
                self.registry.undeclared(self.request.job), field=f"body.{RUN_PART}.job"
            )
        for name in self.files:
            self._check_part(name)

    def _check_part(self, name: str) -> int | None:
        """A file part names a file param of the run's job: its max_mb in bytes, if any."""
        assert self.job is not None  # noqa: S101  called once the job is known
        decl = self.job.spec.params.get(name)
        if decl is None or decl.type != "file":
            raise InvalidInputError(
                f"file part {name[:64]!r}: job {self.job.name!r} has no file param of that "
                "name", field=f"params.{name[:64]}",
            )  # fmt: skip
        return None if decl.max_mb is None else int(decl.max_mb * 2**20)

    async def discard(self) -> None:
        """Nothing of a failed request stays: the file being received, and the uploads it
        created that nobody else uploaded or used meanwhile."""
        if self._incoming is not None:
            await self._incoming.discard()
        for upload_id in self.created:
            await asyncio.to_thread(self.uploads.take_back, upload_id)

    async def submit_request(self) -> SubmitRequest:
        if self.job is None:
            await self._know_job()
        request = self.request
        assert request is not None  # noqa: S101  _know_job read it or raised
        for name, upload in self.files.items():
            if name in request.params:
                raise InvalidInputError(
                    f"param {name!r} is given both in the run and as a file part",
                    field=f"params.{name}",
                )
            # the run names the file as this request did: the same bytes sent before under
            # another name are stored under that one (upload_refs.py)
            request.params[name] = upload_refs.ref(upload.id, self.names[name])
        return request


async def submit_multipart(scope: Scope, receive: Receive, send: Send) -> None:
    conn = HTTPConnection(scope)
    runtime = runtime_of(conn)
    authorize(scope, runtime.auth, relay_signer(conn), Role.SUBMIT)  # before reading anything
    headers = Headers(scope=scope)
    one_idempotency_key(headers)
    key = headers.get("idempotency-key")
    if key is not None and (len(key) > 255 or not IDEMPOTENCY_KEY.fullmatch(key)):
        raise InvalidInputError(
            "Idempotency-Key: 1 to 255 visible ASCII characters and spaces, not ending in one",
            field="header.Idempotency-Key",
        )  # fmt: skip
    prefer = prefer_of(headers)
    prefer_wait(prefer, runtime.settings.max_wait_s)  # a malformed wait: refused before the files
    boundary = _boundary(headers)
    runtime.runs.check_accepting()  # nothing is received that could not be submitted
    if runtime.runs.disk is not None:
        await runtime.runs.disk.check()
    form = _Form(runtime.uploads, runtime.registry, runtime.settings.max_body_kb * 1024)
    try:
        try:
            await form.read(Request(scope, receive).stream(), boundary)
        except ClientDisconnect:
            raise client_left() from None  # as the JSON body's (fast_submit.py)
        except RunyardError as exc:
            # refused as the body came (a file over its max_mb or max_upload_mb, a part the
            # run has no param for): the rest of it is not read, the connection closed
            close_after(exc)
            raise
        request = await form.submit_request()
        scope[FORM_FILES] = frozenset(form.files)  # what is refused now is named in the run
        response = await answer_submit(
            runtime.runs, runtime.settings, request, key, prefer, receive
        )
    except BaseException:
        await form.discard()
        raise
    runtime.uploads.settle(form.created)
    await response(scope, receive, send)
