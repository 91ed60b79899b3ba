"""A schedule's file params: checked when it is made or changed as a submit's are, and the
uploads it names kept while it may fire a run that uses them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol, TypeVar

from runyard.jobs.spec import Job
from runyard.models import Run, Schedule
from runyard.services.admission_holds import Hold
from runyard.services.uploads import Seen, named_uploads

T = TypeVar("T")


class FileParams(Protocol):
    """What a submit does with file params, and the admission a fired run passes as a
    submitted one does (services/runs.py's RunService)."""

    async def check_files(self, job: Job, values: dict[str, Any], seen: Seen) -> None: ...

    def check_accepting(self) -> None: ...

    async def admit(
        self, job: str, job_max_queue: int | None, adding: int = 1, writing: int = 0
    ) -> Hold: ...

    async def stored_with_uploads(
        self, job: Job, runs: list[Run], store: Callable[[], Awaitable[T]]
    ) -> T: ...


def named_by(schedules: Iterable[Schedule]) -> set[str]:
    """The uploads these schedules name: each may be needed by the next run one fires, so
    none expires while its schedule exists (services/uploads/expiry.py)."""
    return {u for s in schedules for u in named_uploads(s.params.values())}
