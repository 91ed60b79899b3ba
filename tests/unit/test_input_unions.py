"""No request input is validated through a pydantic union: a union reports each refusal once
per member, each named by the member's tag (`header.Last-Event-ID.constrained-str` beside
`header.Last-Event-ID.none`), and a problem's `field` would carry a tag that no client sent.
Every route's params and body, every request body model (some are read by hand, not by
FastAPI), and a job's params model of every param type are walked here."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.dependencies.utils import get_flat_params
from fastapi.routing import APIRoute
from pydantic import BaseModel

from runyard.api.app import create_app
from runyard.api.openai_schemas import ChatRequest
from runyard.config import Settings
from runyard.jobs.params import ParamDecl, build_params_model
from runyard.schemas import RequestBody

UNIONS = frozenset({"union", "tagged-union"})
# what describes a schema without being validated by it: a plain validator's published
# input type (api/openai_schemas.py's message content), serialisers, metadata
NOT_VALIDATED = frozenset({"json_schema_input_schema", "serialization", "metadata"})


def unions_in(schema: Any, where: str = "") -> Iterator[str]:
    if isinstance(schema, dict):
        if isinstance(schema.get("type"), str) and schema["type"] in UNIONS:
            yield where or "(top)"
        for key, value in schema.items():
            if key not in NOT_VALIDATED:
                yield from unions_in(value, f"{where}.{key}")
    elif isinstance(schema, list | tuple):
        for i, value in enumerate(schema):
            yield from unions_in(value, f"{where}[{i}]")


def api_routes(routes: list[Any]) -> Iterator[APIRoute]:
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        included = getattr(route, "original_router", None)  # an included router's own
        if included is not None:
            yield from api_routes(included.routes)


def route_inputs(tmp_path: Path) -> Iterator[tuple[str, Any]]:
    app = create_app(Settings(data_dir=tmp_path / "data", jobs_dir=tmp_path))
    for route in api_routes(app.routes):
        fields = list(get_flat_params(route.dependant))
        if route.body_field is not None:
            fields.append(route.body_field)
        for field in fields:
            yield f"{route.path} {field.alias}", field._type_adapter.core_schema


def subclasses(cls: type) -> Iterator[type]:
    for sub in cls.__subclasses__():
        yield sub
        yield from subclasses(sub)


def test_no_route_input_is_a_union(tmp_path: Path) -> None:
    found = {name: list(unions_in(schema)) for name, schema in route_inputs(tmp_path)}
    assert len(found) > 20  # the walk reached the routes
    assert {name: at for name, at in found.items() if at} == {}


@pytest.mark.parametrize("model", [*subclasses(RequestBody), ChatRequest])
def test_no_request_body_is_a_union(model: type[BaseModel]) -> None:
    assert list(unions_in(model.__pydantic_core_schema__)) == []


def test_no_job_params_model_is_a_union() -> None:
    decls = {
        f"a_{kind}": ParamDecl.model_validate({"type": kind, **extra})
        for kind, extra in {
            "int": {}, "float": {}, "bool": {}, "str": {}, "json": {}, "file": {},
            "enum": {"choices": ["a", "b"]},
        }.items()
    }  # fmt: skip
    model = build_params_model("every", decls)
    assert list(unions_in(model.__pydantic_core_schema__)) == []
