"""Batch routes: create (iterations or sweep), list, read counts by state, cancel all."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from runyard.api.deps import BatchesDep
from runyard.api.inputs import BatchId, Cursor, IdempotencyKey, int_query, one_idempotency_key
from runyard.api.json_body import JSONBodyRoute
from runyard.api.security import READ, SUBMIT
from runyard.models import TERMINAL_STATES, Batch
from runyard.schemas import BatchPage, BatchRequest, BatchView, problem_responses

router = APIRouter(
    prefix="/v1/batches",
    tags=["batches"],
    route_class=JSONBodyRoute,  # a body: application/json, UTF-8, no key twice
    responses=problem_responses(400, 401, 403, 404, 413, 422, 429, 503, 507),
)


def batch_view(batch: Batch, counts: dict[str, int]) -> BatchView:
    # Not "as many ended as the batch has": its runs are stored with it, all at once, and
    # those deleted since (by a request, by retention) are no longer counted, yet ended.
    return BatchView(
        id=batch.id, job=batch.job, size=batch.size,
        created_at=datetime.fromtimestamp(batch.created_at, UTC), counts=counts,
        done=all(state in TERMINAL_STATES for state in counts),
        idempotency_key=batch.idempotency_key,
    )  # fmt: skip


@router.post(
    "", status_code=202, response_model=BatchView, dependencies=[SUBMIT],
    responses=problem_responses(409),
)  # fmt: skip
async def create_batch(
    body: BatchRequest,
    batches: BatchesDep,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Sent again under the `Idempotency-Key` it was made with, the batch that key made is
    answered (`Idempotent-Replayed: true`, its runs' counts now), and no run is made; the key
    with another request is a 409."""
    one_idempotency_key(request.headers)
    batch, counts, created = await batches.create(
        body.job, body.params, iterations=body.iterations, sweep=body.sweep,
        priority=body.priority, labels=body.labels, idempotency_key=idempotency_key,
    )  # fmt: skip
    headers = {"Location": f"/v1/batches/{batch.id}"}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    view = batch_view(batch, counts)
    return JSONResponse(view.model_dump(mode="json"), status_code=202, headers=headers)


@router.get("", response_model=BatchPage, dependencies=[READ])
async def list_batches(
    batches: BatchesDep,
    cursor: Cursor = None,
    limit: Annotated[int, int_query(ge=1, le=200)] = 20,
) -> BatchPage:
    page, next_cursor = await batches.page(cursor, limit)
    return BatchPage(batches=[batch_view(*item) for item in page], next_cursor=next_cursor)


@router.get("/{batch_id}", response_model=BatchView, dependencies=[READ])
async def get_batch(batch_id: BatchId, batches: BatchesDep) -> BatchView:
    return batch_view(*await batches.get(batch_id))


@router.post("/{batch_id}/cancel", status_code=202, response_model=BatchView, dependencies=[SUBMIT])
async def cancel_batch(batch_id: BatchId, batches: BatchesDep) -> BatchView:
    return batch_view(*await batches.cancel(batch_id))
