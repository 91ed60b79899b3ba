"""What a submit checks of its file params: each names a stored upload, within the param's
size limit and of an accepted kind — by name and, where cheap, by content (sniff.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from pathlib import PurePath
from typing import Any

from runyard.errors import InvalidInputError, NotFoundError, raise_if_servers_fault
from runyard.jobs.spec import JobSpec
from runyard.services.uploads.incoming import UploadTooLargeError
from runyard.services.uploads.names import UPLOAD_ID
from runyard.services.uploads.record import Upload
from runyard.services.uploads.sniff import content_matches
from runyard.services.uploads.store import Uploads

PREFIX = "upload:"
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


def file_values(spec: JobSpec, values: dict[str, Any]) -> dict[str, str]:
    """Param name -> upload id, for the file params of a validated set of values."""
    return {
        name: str(values[name])[len(PREFIX) :]
        for name, decl in spec.params.items()
        if decl.type == "file" and name in values
    }


def named_uploads(params: Iterable[Any]) -> list[str]:
    """The upload ids among a stored run's param values (to release them)."""
    return [
        value[len(PREFIX) :]
        for value in params
        if isinstance(value, str)
        and value.startswith(PREFIX)
        and UPLOAD_ID.fullmatch(value[len(PREFIX) :])
    ]


async def check_files(
    uploads: Uploads, spec: JobSpec, values: dict[str, Any], seen: Seen, fetch: Fetch | None = None
) -> None:
    """Each file param names a stored upload within its limits (422 or 413 naming the param
    and the limit). `seen`: uploads already read (a batch shares one upload among runs).
    `fetch`: in a cluster, an upload another member holds is fetched here first."""
    for name, upload_id in file_values(spec, values).items():
        decl = spec.params[name]
        field = f"params.{name}"
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
        if not upload.name.lower().endswith(accept):
            raise InvalidInputError(
                f"param {name!r}: {upload.name!r} is not a {', '.join(accept)} file", field=field
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
        ext = PurePath(upload.name).suffix.lower()
        if not content_matches(ext, head):
            raise InvalidInputError(
                f"param {name!r}: {upload.name!r} does not hold what a {ext} file holds "
                "(its content was checked, not only its name)", field=field,
            )  # fmt: skip
