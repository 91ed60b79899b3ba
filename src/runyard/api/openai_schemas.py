"""The request and answer bodies of the OpenAI-compatible routes, as the `openai` SDK sends
and reads them. Only what runyard uses is checked; sampling knobs (temperature, max_tokens,
tools, ...) mean nothing to a program and are ignored, as other compatible servers do."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StrictInt,
    StringConstraints,
    TypeAdapter,
    ValidationInfo,
    field_validator,
)
from pydantic.config import JsonDict
from pydantic_core import PydanticCustomError

from runyard.bounds import TEXT_PATTERN
from runyard.jobs.chat import MODEL_PATTERN
from runyard.schemas import RequestBody
from runyard.services.chat import Message, estimate_tokens

MAX_MESSAGES = 1024
MAX_CONTENT = 100_000  # characters a message (or part) may hold; the job bounds the whole
MAX_PARTS = 256
# Control characters are refused as any param refuses them, a 422 naming the message
# (services/chat.py), and the published schema says so (TEXT_PATTERN, as every free text has
# it): a pattern the model checked itself would refuse them again, unnamed
Text = Annotated[
    str,
    StringConstraints(max_length=MAX_CONTENT),
    Field(json_schema_extra={"pattern": TEXT_PATTERN}),
]
ModelId = Annotated[str, StringConstraints(pattern=MODEL_PATTERN)]


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: Text


# Only an assistant's message may come without content (one that called tools), as OpenAI
# has it: any other without, or with null, is refused naming it (it was taken as empty).
_CONTENT_REQUIRED: JsonDict = {
    "if": {"properties": {"role": {"enum": ["system", "developer", "user", "tool"]}}},
    "then": {"required": ["content"], "properties": {"content": {"not": {"type": "null"}}}},
}


# at least one part, as OpenAI has it: `content: []` was taken as an empty message (a probe)
Parts = Annotated[list[TextPart], Field(min_length=1, max_length=MAX_PARTS)]
_TEXT, _PARTS = TypeAdapter(Text), TypeAdapter(Parts)


def _text_or_parts(value: object) -> str | list[TextPart]:
    """A message's content: a string, or a list of text parts, told apart by the input's own
    type. Not a union of the two, which pydantic tries member by member: each refusal came
    once per member, named by its union tag (`messages.0.content.constrained-str` and
    `messages.0.content.list[TextPart]` for one string too long); this names the field, or
    the part within it, once."""
    if isinstance(value, str):
        return _TEXT.validate_python(value)
    if isinstance(value, list):
        return _PARTS.validate_python(value)
    raise PydanticCustomError("text_or_parts", "Input should be a string or a list of text parts")


Content = Annotated[
    str | list[TextPart], PlainValidator(_text_or_parts, json_schema_input_type=Text | Parts)
]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore", json_schema_extra=_CONTENT_REQUIRED)
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Content | None = Field(default=None, validate_default=True)
    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")] | None = None

    @field_validator("content")
    @classmethod
    def _content_unless_assistant(cls, value: object, info: ValidationInfo) -> object:
        role = info.data.get("role")
        if value is None and role is not None and role != "assistant":
            raise ValueError(f"a {role} message needs content (a string or text parts)")
        return value

    def plain(self) -> Message:
        content = self.content
        if isinstance(content, list):
            content = "".join(part.text for part in content)
        return Message(self.role, content or "", self.name)


class StreamOptions(RequestBody):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class ChatRequest(RequestBody):
    model_config = ConfigDict(extra="ignore")
    model: ModelId
    messages: Annotated[list[ChatMessage], Field(min_length=1, max_length=MAX_MESSAGES)]
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    # a call is one run, and a run gives one answer: asked for more, a caller reading
    # `choices[1]` would fail on an answer that looked whole
    n: (
        # strict: `true` or `"1"` is not a count (a probe: both were taken as 1)
        Annotated[StrictInt, Field(ge=1, le=1, description="Choices to make: runyard makes one.")]
        | None
    ) = None


class AnswerMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: AnswerMessage
    finish_reason: Literal["stop", "length"]


class Usage(BaseModel):
    """Estimated (about four characters a token): a program reports no tokens."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage


class ModelView(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelView]


def usage(prompt: str, answer: str) -> Usage:
    p, c = estimate_tokens(prompt), estimate_tokens(answer)
    return Usage(prompt_tokens=p, completion_tokens=c, total_tokens=p + c)


def chunk(
    completion_id: str, created: int, model: str, delta: dict[str, Any], finish: str | None
) -> dict[str, Any]:
    return {
        "id": completion_id, "object": "chat.completion.chunk", "created": created,
        "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }  # fmt: skip
