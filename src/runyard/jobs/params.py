"""Typed job parameters: declarations, validation and their published JSON Schema."""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    create_model,
    model_validator,
)

from runyard import upload_refs
from runyard.bounds import (
    JSON_DEFAULT_DEPTH,
    JSON_DEFAULT_KEYS,
    LINE_PATTERN,
    TEXT_PATTERN,
    json_problem,
)
from runyard.errors import bounded, field_path

ParamType = Literal["int", "float", "str", "bool", "enum", "json", "file"]
UPLOAD_REF = upload_refs.PATTERN  # a file param's value: `upload:ID[/NAME]` (PUT /v1/uploads)
EXTENSION = r"^\.[A-Za-z0-9_+-]{1,16}$"
# where a file param's file lands in the workspace: a relative path of plain segments
SEGMENT = r"[A-Za-z0-9_+-][A-Za-z0-9_.+-]{0,127}"  # never . or .., nor hidden
STAGE_PATH = rf"^{SEGMENT}(/{SEGMENT}){{0,15}}$"

# A str param without max_length is still bounded: nothing unbounded reaches argv or the store.
DEFAULT_STR_MAX = 4096
JSON_MAX_BYTES = 65536


@dataclass(frozen=True, slots=True)
class JsonCeiling:
    """The server's bounds on what a job file may allow a json param (settings
    `json_depth_ceiling` and `json_keys_ceiling`)."""

    depth: int = 32
    keys: int = 10_000


class ParamDecl(BaseModel):
    """One `[params.NAME]` table of a job file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: ParamType
    description: str = ""
    default: Any = None
    # an int as written (a bound past 2^53 is not rounded through a float), a float finite
    min: int | Annotated[float, Field(allow_inf_nan=False)] | None = None
    max: int | Annotated[float, Field(allow_inf_nan=False)] | None = None
    max_length: int | None = Field(default=None, ge=1, le=1_000_000)
    # strict: `true` was read as 1 (published as an integer, refused as a boolean)
    choices: list[StrictStr | StrictInt | StrictFloat] | None = None
    required: bool | None = None
    max_depth: int | None = Field(default=None, ge=1, description="json: nesting depth")
    max_keys: int | None = Field(default=None, ge=1, description="json: keys per object")
    max_mb: float | None = Field(default=None, gt=0, description="file: size at most")
    accept: list[Annotated[str, Field(pattern=EXTENSION)]] | None = Field(
        default=None, min_length=1, description="file: the file name's extensions allowed"
    )
    path: str | None = Field(
        default=None, max_length=255, pattern=STAGE_PATH,
        description="file: where it lands in the workspace (default inputs/NAME/FILE_NAME)",
    )  # fmt: skip

    def load_problem(self, name: str) -> str | None:
        """What a load refuses that a spec stored with a run by an older version may hold."""
        # 1 and 1.0 are one JSON number
        if self.choices and len({(isinstance(c, str), c) for c in self.choices}) < len(
            self.choices
        ):
            return f"params.{name}.choices names a value twice"
        if self.type == "float" and any(
            isinstance(b, int) and abs(b) > sys.float_info.max for b in (self.min, self.max)
        ):  # refused before its model is built, which raised OverflowError
            return f"params.{name}: `min`/`max` of a float param lie beyond a double's range"
        return None

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
        if self.type == "int" and _no_integer(self.min, self.max):
            # a job that refuses every value it could be given (`min = 0.5`, `max = 0.7`)
            raise ValueError("no integer lies between `min` and `max`")
        if (self.max_depth is not None or self.max_keys is not None) and self.type != "json":
            raise ValueError("`max_depth`/`max_keys` are only for json params")
        file_only = (self.max_mb, self.accept, self.path)
        if any(v is not None for v in file_only) and self.type != "file":
            raise ValueError("`max_mb`/`accept`/`path` are only for file params")
        self._default_coherent()
        return self

    def _default_coherent(self) -> None:
        if self.type == "file" and self.default is not None:
            raise ValueError("a file param has no default: each run's file is uploaded")
        if (
            self.required is False
            and "default" not in self.model_fields_set
            and self.type != "json"
        ):
            # the run would get nothing the command could be given (a load error that named
            # a default the file never wrote, for `None` fitting no type); a json param's
            # absent value is JSON's null, as it always was
            raise ValueError(
                "a file param is always required: each run uploads its file"
                if self.type == "file"
                else "`required = false` needs a `default`: what a run that omits it gets"
            )

    @property
    def depth_limit(self) -> int:
        return self.max_depth or JSON_DEFAULT_DEPTH

    @property
    def keys_limit(self) -> int:
        return self.max_keys or JSON_DEFAULT_KEYS

    def check_ceiling(self, name: str, ceiling: JsonCeiling) -> None:
        """A job file may raise a json param's bounds only as far as the server allows."""
        if self.depth_limit > ceiling.depth:
            raise ValueError(
                f"params.{name}.max_depth {self.depth_limit} is over the server's "
                f"json_depth_ceiling ({ceiling.depth})"
            )
        if self.keys_limit > ceiling.keys:
            raise ValueError(
                f"params.{name}.max_keys {self.keys_limit} is over the server's "
                f"json_keys_ceiling ({ceiling.keys})"
            )

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
        return Annotated[int, Field(strict=True, ge=lo, le=hi, **meta), BeforeValidator(_whole)]
    if decl.type == "float":
        # strict float still takes a JSON integer, which is what a client expects
        # bounded by a double's range at least, so that the schema says what a number too
        # large for one (1e400, refused) is
        least = -sys.float_info.max if decl.min is None else decl.min
        most = sys.float_info.max if decl.max is None else decl.max
        return Annotated[
            float,
            Field(strict=True, ge=least, le=most, allow_inf_nan=False, **meta),
            AfterValidator(_unsigned_zero),
        ]
    if decl.type == "bool":
        return Annotated[bool, Field(strict=True, **meta)]
    if decl.type == "str":
        # tab, LF and CR are fine in free text; no other control character reaches argv
        limit = decl.max_length or DEFAULT_STR_MAX
        return Annotated[str, Field(strict=True, max_length=limit, pattern=TEXT_PATTERN, **meta)]
    if decl.type == "enum":
        # BeforeValidator: a Literal matches by ==, and True == 1: `true` was taken for
        # choice 1 (and stored as 1), which the schema's enum (JSON: true is no number) refuses
        choices = tuple(decl.choices or ())
        return Annotated[Literal[choices], BeforeValidator(_no_bool), Field(**meta)]
    return _structured(decl, meta)


def _whole(value: Any) -> Any:
    """A JSON number without a fraction is an integer, as JSON Schema (and `params_schema`)
    has it: `1.0` and `1e2` were refused where the published schema takes them. Only where a
    double holds every integer (|x| < 2^53): from there the number read is not always the one
    written (`12345678901234567891.0` reads as ...7168), and is refused, not run rounded."""
    if type(value) is float and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def _unsigned_zero(value: float) -> float:
    """-0.0 as 0.0: it passes `min = 0`, and rendered into argv it was `-0.0`, an option to
    most programs (a probe: `sleep -0.0` failed the run)."""
    return value + 0.0  # -0.0 + 0.0 is 0.0; every other float is itself


def _no_bool(value: Any) -> Any:
    if isinstance(value, bool):  # no choice is one (choices are strings and numbers)
        raise ValueError("a boolean is none of the choices")  # noqa: TRY004  pydantic: a 422
    return value


def _structured(decl: ParamDecl, meta: dict[str, Any]) -> Any:
    """A file param (`upload:ID[/NAME]`, its limits published beside) or a json one."""
    if decl.type == "file":
        meta["json_schema_extra"] = _file_schema(decl)
        return Annotated[str, Field(strict=True, pattern=UPLOAD_REF, **meta)]
    return Annotated[Any, Field(json_schema_extra=_json_schema(decl), **meta)]


def _file_schema(decl: ParamDecl) -> dict[str, Any]:
    """A file's limits, published beside the `upload:ID` pattern."""
    extra = {"x-max-mb": decl.max_mb, "x-accept": decl.accept}
    return {k: v for k, v in extra.items() if v is not None}


def _json_schema(decl: ParamDecl) -> dict[str, Any]:
    """The bounds `json_problem` and the size check enforce (JSON Schema has no keyword for
    a value's size as JSON text); `params_schema` spells the nesting out from them."""
    return {"x-max-depth": decl.depth_limit, "x-max-keys": decl.keys_limit,
            "x-max-bytes": decl.max_length or JSON_MAX_BYTES}  # fmt: skip


def _json_levels(depth: int, keys: int, defs: dict[str, Any]) -> str:
    """The definition of JSON nested at most `depth` levels, at most `keys` keys an object,
    text without control characters (JSON Schema has no depth keyword): one definition a
    level, each naming the one below. Spelled inline, each level held the next twice (in
    `items` and in `additionalProperties`): a schema that doubled with every level, which
    a job file at the depth ceiling (32) made too big to build."""
    scalar: list[dict[str, Any]] = [
        {"type": "string", "pattern": TEXT_PATTERN}, {"type": "number"},
        {"type": "boolean"}, {"type": "null"},
    ]  # fmt: skip
    name = f"json_{keys}_keys_0"
    defs.setdefault(name, {"anyOf": scalar})
    for level in range(1, depth + 1):
        below, name = {"$ref": f"#/$defs/{name}"}, f"json_{keys}_keys_{level}"
        defs.setdefault(name, {
            "anyOf": [
                *scalar,
                {"type": "array", "items": below},
                {"type": "object", "maxProperties": keys,
                 "propertyNames": {"pattern": LINE_PATTERN}, "additionalProperties": below},
            ]
        })  # fmt: skip
    return name


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


def _no_integer(low: float | None, high: float | None) -> bool:
    return low is not None and high is not None and math.ceil(low) > math.floor(high)


class ParamError(Exception):
    """Params that do not fit the job; `errors` name each offending field."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors = [(loc, bounded(msg)) for loc, msg in errors]
        # said of the first ten (a field by its first characters): a message stays short
        said = "; ".join(f"params.{loc[:200]}: {msg}" for loc, msg in self.errors[:10])
        more = f"; and {len(errors) - 10} more" if len(errors) > 10 else ""
        super().__init__(said + more)


def validate_params(
    model: type[BaseModel], decls: dict[str, ParamDecl], params: dict[str, Any]
) -> dict[str, Any]:
    # json values are measured before pydantic copies them: a deep one must never reach a
    # serialiser (pydantic's gives up at ~255 levels, with an error, not a refusal)
    for name, decl in decls.items():
        if decl.type == "json" and name in params:
            check_json(name, decl, params[name])
    try:
        return model.model_validate(params).model_dump()
    except ValidationError as exc:
        raise ParamError(
            [(field_path(err["loc"]) or "params", err["msg"]) for err in exc.errors()]
        ) from None


def check_json(name: str, decl: ParamDecl, value: Any) -> None:
    # shape first: a deep value is refused before anything serialises it
    found = json_problem(value, decl.depth_limit, decl.keys_limit)
    if found is not None:
        where, why = found
        raise ParamError([(name, f"{where}: {why}" if where != "(value)" else why)])
    size = _compact_size(value)
    limit = decl.max_length or JSON_MAX_BYTES
    if size > limit:
        raise ParamError(
            [(name, f"JSON value is {size} bytes (compact, UTF-8), over the limit of {limit}")]
        )


def _compact_size(value: Any) -> int:
    """A JSON value's size as published (`x-max-bytes`): compact, UTF-8 (json's fallback, for
    an integer past 64 bits, escapes no text either)."""
    try:
        return len(orjson.dumps(value))
    except TypeError:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        return len(text.encode("utf-8", "surrogatepass"))


def params_schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema()
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        prop.pop("title", None)
        if "x-max-depth" in prop:  # a json param: its nesting, level by level
            defs = schema.setdefault("$defs", {})
            prop["$ref"] = f"#/$defs/{_json_levels(prop['x-max-depth'], prop['x-max-keys'], defs)}"
    return schema
