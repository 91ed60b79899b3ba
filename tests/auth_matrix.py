"""The role each route needs: one table, checked in-process (tests/integration) and against a
real server (tests/e2e/test_security.py), and a route added without an entry fails both."""

from __future__ import annotations

import json

from runyard.auth import Role

CHAT = [{"role": "user", "content": "hi"}]
OPENAI_ROUTES = {"/v1/models", "/v1/models/{model}", "/v1/chat/completions"}


def refusal_detail(body: bytes) -> str:
    """What a refusal says: a problem's detail, or the message of an OpenAI-shaped error
    (the OpenAI-compatible routes answer in that shape; docs/openai.md)."""
    data = json.loads(body)
    return str(data["error"]["message"] if "error" in data else data["detail"])


def matrix(run_id: str) -> list[tuple[str, str, Role, dict[str, object] | None]]:
    r = f"/v1/runs/{run_id}"
    return [
        ("GET", "/v1/jobs", Role.READ, None),
        ("GET", "/v1/jobs/true", Role.READ, None),
        ("POST", "/v1/runs", Role.SUBMIT, {"job": "true"}),
        ("GET", "/v1/runs", Role.READ, None),
        ("GET", r, Role.READ, None),
        ("GET", f"{r}/logs", Role.READ, None),
        ("GET", f"{r}/logs/stream", Role.READ, None),
        ("GET", f"{r}/events", Role.READ, None),
        ("GET", f"{r}/artifacts", Role.READ, None),
        ("GET", f"{r}/artifacts/outputs/x", Role.READ, None),
        ("POST", f"{r}/cancel", Role.SUBMIT, None),
        ("POST", "/v1/batches", Role.SUBMIT, {"job": "true", "iterations": 1}),
        ("GET", "/v1/batches/none", Role.READ, None),
        ("POST", "/v1/batches/none/cancel", Role.SUBMIT, None),
        ("POST", "/v1/schedules", Role.SUBMIT, {"job": "true", "interval_s": 3600}),
        ("GET", "/v1/schedules", Role.READ, None),
        ("GET", "/v1/schedules/none", Role.READ, None),
        ("PATCH", "/v1/schedules/none", Role.SUBMIT, {"paused": True}),
        ("DELETE", "/v1/schedules/none", Role.ADMIN, None),
        ("GET", "/v1/status", Role.ADMIN, None),
        ("GET", "/v1/me", Role.READ, None),
        ("GET", "/v1/batches", Role.READ, None),
        ("GET", "/v1/events", Role.READ, None),
        ("PUT", "/v1/uploads", Role.SUBMIT, None),
        ("POST", "/v1/uploads", Role.SUBMIT, None),
        ("GET", f"/v1/uploads/{'0' * 64}", Role.READ, None),
        ("GET", f"/v1/uploads/{'0' * 64}/content", Role.READ, None),
        ("DELETE", f"/v1/uploads/{'0' * 64}", Role.ADMIN, None),
        ("GET", "/v1/models", Role.READ, None),
        ("GET", "/v1/models/true", Role.READ, None),
        ("POST", "/v1/chat/completions", Role.SUBMIT, {"model": "true", "messages": CHAT}),
        ("DELETE", r, Role.ADMIN, None),  # last: it removes the run
    ]
