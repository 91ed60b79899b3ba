"""GET /v1/me: who the caller's token says they are, so a client shows only what it may do."""

from __future__ import annotations

from fastapi import APIRouter, Request

from runyard.api.deps import AuthDep
from runyard.api.security import READ
from runyard.auth import Role
from runyard.schemas import Principal, problem_responses

router = APIRouter(tags=["auth"], responses=problem_responses(401, 403))


@router.get("/v1/me", response_model=Principal, dependencies=[READ])
async def me(request: Request, auth: AuthDep) -> Principal:
    if not auth.enabled:
        # no tokens: the server only listens on loopback, and everyone there may do anything
        return Principal(name=None, role=Role.ADMIN.name.lower(), auth=False)
    state = request.scope["state"]
    return Principal(name=state["principal"], role=Role(state["role"]).name.lower(), auth=True)
