"""What a submit checks of its file params: each names a stored upload, within the param's
size limit and of an accepted kind — by name and, where cheap, by content (sniff.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from pathlib import PurePath
from typing import Any

from runyard import upload_refs
from runyard.errors import InvalidInputError, NotFoundError, raise_if_servers_fault
from runyard.jobs.spec import JobSpec
from runyard.services.uploads.incoming import UploadTooLargeError
from runyard.services.uploads.names import UPLOAD_ID, safe_name
from runyard.services.uploads.record import Upload
from runyard.services.uploads.sniff import content_matches
from runyard.services.uploads.store import Uploads

PREFIX = upload_refs.PREFIX
# an upload read once per request, with its first bytes once they were needed
Seen = dict[str, tuple[Upload, bytes | None]]


Fetch = Callable[[str], Awaitable[bool]]


async def _get(uploads: Uploads, upload_id: str, fetch: Fetch | None) -> Upload:
    try:
        return await uploads.get(upload_id)
    except NotFoundError:
        if fetch is None or not UPLOAD_ID.fullmatch(upload_id) or not await fetch(upload_id):
            raise
    return await uploads.get(upload_id)


def file_refs(spec: JobSpec, values: dict[str, Any]) -> dict[str, tuple[str, str | None]]:
    """Param name -> (upload id, the name the run gives the file, if any), for the file
    params of a validated set of values."""
    return {
        name: upload_refs.split(str(values[name])[len(PREFIX) :])
        for name, decl in spec.params.items()
        if decl.type == "file" and name in values
    }


def file_values(spec: JobSpec, values: dict[str, Any]) -> dict[str, str]:
    """Param name -> upload id, for the file params of a validated set of values."""
    return {name: upload_id for name, (upload_id, _) in file_refs(spec, values).items()}


def named_uploads(params: Iterable[Any]) -> list[str]:
    """The upload ids among a stored run's param values (to release them)."""
    found = []
    for value in params:
        if isinstance(value, str) and value.startswith(PREFIX):
            upload_id = upload_refs.upload_id(value[len(PREFIX) :])
            if UPLOAD_ID.fullmatch(upload_id):
                found.append(upload_id)
    return found


def _plain(param: str, name: str | None, field: str) -> None:
    """A name the run gives its file is one PUT /v1/uploads would have kept as it is."""
    if name is not None and safe_name(name) != name:
        raise InvalidInputError(
            f"param {param!r}: {name!r} is not a plain file name (upload:ID/NAME takes one "
            f"as an upload keeps it: {safe_name(name)!r})", field=field,
        )  # fmt: skip


async def check_files(
    uploads: Uploads, spec: JobSpec, values: dict[str, Any], seen: Seen, fetch: Fetch | None = None
) -> None:
    """Each file param names a stored upload within its limits (422 or 413 naming the param
    and the limit). `seen`: uploads already read (a batch shares one upload among runs).
    `fetch`: in a cluster, an upload another member holds is fetched here first."""
    for name, (upload_id, given) in file_refs(spec, values).items():
        decl = spec.params[name]
        field = f"params.{name}"
        _plain(name, given, field)
        if upload_id not in seen:
            try:
                seen[upload_id] = (await _get(uploads, upload_id, fetch), None)
            except NotFoundError:
                raise InvalidInputError(
                    f"param {name!r}: no upload {upload_id} (PUT /v1/uploads first)", field=field
                ) from None
        upload, head = seen[upload_id]
        if decl.max_mb is not None and upload.size > decl.max_mb * 2**20:
            raise UploadTooLargeError(
                f"param {name!r}: the file is {upload.size} bytes, over its max_mb "
                f"({decl.max_mb:g})", field=field, limit_bytes=int(decl.max_mb * 2**20),
            )  # fmt: skip
        accept = tuple(ext.lower() for ext in decl.accept or ())
        if not accept:
            continue
        file_name = upload.name if given is None else given  # the run's name for it, if any
        if not file_name.lower().endswith(accept):
            raise InvalidInputError(
                f"param {name!r}: {file_name!r} is not a {', '.join(accept)} file", field=field
            )
        if head is None:
            try:
                head = await asyncio.to_thread(uploads.head, upload_id)
            except OSError as exc:  # deleted since it was looked up (a 500 and a traceback)
                raise_if_servers_fault(exc, "the upload")
                raise InvalidInputError(
                    f"param {name!r}: no upload {upload_id} (deleted meanwhile)", field=field
                ) from None
            seen[upload_id] = (upload, head)
        ext = PurePath(file_name).suffix.lower()
        if not content_matches(ext, head):
            raise InvalidInputError(
                f"param {name!r}: {file_name!r} does not hold what a {ext} file holds "
                "(its content was checked, not only its name)", field=field,
            )  # fmt: skip
