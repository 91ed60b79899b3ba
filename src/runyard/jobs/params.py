"""Typed job parameters: declarations, validation and their published JSON Schema."""

from __future__ import annotations

import json
import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator

ParamType = Literal["int", "float", "str", "bool", "enum", "json"]

# A str param without max_length is still bounded: nothing unbounded reaches argv or the store.
DEFAULT_STR_MAX = 4096
JSON_MAX_BYTES = 65536


class ParamDecl(BaseModel):
    """One `[params.NAME]` table of a job file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: ParamType
    description: str = ""
    default: Any = None
    min: float | None = None
    max: float | None = None
    max_length: int | None = Field(default=None, ge=1, le=1_000_000)
    choices: list[str | int | float] | None = None
    required: bool | None = None

    @model_validator(mode="after")
    def _coherent(self) -> ParamDecl:
        if self.type == "enum" and not self.choices:
            raise ValueError("an enum param needs a non-empty `choices` list")
        if self.type != "enum" and self.choices is not None:
            raise ValueError("`choices` is only for enum params")
        if (self.min is not None or self.max is not None) and self.type not in ("int", "float"):
            raise ValueError("`min`/`max` are only for int and float params")
        if self.max_length is not None and self.type not in ("str", "json"):
            raise ValueError("`max_length` is only for str and json params")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("`min` is greater than `max`")
        return self

    @property
    def is_required(self) -> bool:
        if self.required is not None:
            return self.required
        return "default" not in self.model_fields_set


def _annotation(decl: ParamDecl) -> Any:
    meta: dict[str, Any] = {"description": decl.description or None}
    if decl.type == "int":
        lo = None if decl.min is None else math.ceil(decl.min)
        hi = None if decl.max is None else math.floor(decl.max)
        return Annotated[int, Field(strict=True, ge=lo, le=hi, **meta)]
    if decl.type == "float":
        # strict float still takes a JSON integer, which is what a client expects
        return Annotated[float, Field(strict=True, ge=decl.min, le=decl.max, **meta)]
    if decl.type == "bool":
        return Annotated[bool, Field(strict=True, **meta)]
    if decl.type == "str":
        return Annotated[
            str, Field(strict=True, max_length=decl.max_length or DEFAULT_STR_MAX, **meta)
        ]
    if decl.type == "enum":
        return Annotated[Literal[tuple(decl.choices or ())], Field(**meta)]
    return Annotated[Any, Field(**meta)]


def build_params_model(job: str, decls: dict[str, ParamDecl]) -> type[BaseModel]:
    fields: dict[str, Any] = {}
    for name, decl in decls.items():
        default = ... if decl.is_required else decl.default
        fields[name] = (_annotation(decl), default)
    model: type[BaseModel] = create_model(
        f"Params_{job}",
        __config__=ConfigDict(extra="forbid", validate_default=True),
        **fields,
    )
    return model


class ParamError(Exception):
    """Params that do not fit the job; `errors` name each offending field."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"params.{loc}: {msg}" for loc, msg in errors))


def validate_params(
    model: type[BaseModel], decls: dict[str, ParamDecl], params: dict[str, Any]
) -> dict[str, Any]:
    try:
        values = model.model_validate(params).model_dump()
    except ValidationError as exc:
        raise ParamError(
            [(".".join(str(p) for p in err["loc"]) or "params", err["msg"]) for err in exc.errors()]
        ) from None
    for name, decl in decls.items():
        if decl.type == "json":
            size = len(json.dumps(values[name]))
            limit = decl.max_length or JSON_MAX_BYTES
            if size > limit:
                raise ParamError([(name, f"JSON value is {size} bytes, over the limit of {limit}")])
    return values


def params_schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema()
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        prop.pop("title", None)
    return schema
