"""GET /v1/jobs and /v1/jobs/{name}: declared jobs, their params' JSON Schema, load errors."""

from __future__ import annotations

from fastapi import APIRouter

from runyard.api.deps import RegistryDep
from runyard.api.inputs import JobNamePath
from runyard.api.security import READ
from runyard.errors import NotFoundError
from runyard.jobs.spec import Job
from runyard.schemas import JobList, JobView, problem_responses

router = APIRouter(
    prefix="/v1/jobs",
    tags=["jobs"],
    dependencies=[READ],
    responses=problem_responses(401, 403, 404, 422),
)


def job_view(job: Job) -> JobView:
    s = job.spec
    return JobView(
        name=s.name,
        description=s.description,
        command=s.command,
        params_schema=job.schema,
        timeout_s=s.timeout_s,
        kill_grace_s=s.kill_grace_s,
        max_attempts=s.max_attempts,
        retry_on=list(s.retry_on),
        concurrency=s.concurrency,
        priority=s.priority,
        max_queue=s.max_queue,
        workspace=s.workspace,
        artifacts=s.artifacts,
        sandbox=s.sandbox.model_dump() if s.sandbox is not None else None,
    )


@router.get("", response_model=JobList)
async def list_jobs(registry: RegistryDep) -> JobList:
    snap = await registry.snapshot()
    return JobList(jobs=[job_view(j) for _, j in sorted(snap.jobs.items())], errors=snap.errors)


@router.get("/{name}", response_model=JobView)
async def get_job(name: JobNamePath, registry: RegistryDep) -> JobView:
    job = await registry.get(name)
    if job is None:
        raise NotFoundError(registry.undeclared(name), field="path.name")
    return job_view(job)
