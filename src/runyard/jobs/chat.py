"""A job's `[openai]` table: the model name it answers to on `/v1/chat/completions`, which
param receives the conversation and where the answer comes from (docs/openai.md)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from runyard.jobs.params import ParamDecl

# what a model id may be: what OpenAI's own ids look like, and safe in a header and a log line
MODEL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,63}$"
MODEL_NAME = re.compile(MODEL_PATTERN)
MAX_ANSWER_PATH = 255


class OpenAIOptions(BaseModel):
    """`[openai]`: how a chat completion becomes a run of the job and its answer."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    model: str | None = Field(default=None, description="the model id (default: the job name)")
    input: str = Field(description="the param that receives the conversation")
    format: Literal["text", "messages"] = Field(
        default="text",
        description="text: the messages as 'role: content' paragraphs (a str param); "
        "messages: the raw messages as JSON (a json param)",
    )
    answer: str = Field(
        default="stdout", description="`stdout` (the run's log) or `file:PATH` in the workspace"
    )
    cancel_on_disconnect: bool = Field(
        default=False, description="a caller that goes away cancels the run"
    )

    @field_validator("model")
    @classmethod
    def _model(cls, v: str | None) -> str | None:
        if v is not None and not MODEL_NAME.fullmatch(v):
            raise ValueError("model ids are letters, digits, '_', '.', ':', '/', '-' (at most 64)")
        return v

    @field_validator("answer")
    @classmethod
    def _answer(cls, v: str) -> str:
        if v == "stdout":
            return v
        if not v.startswith("file:"):
            raise ValueError("answer is `stdout` or `file:PATH` (relative to the workspace)")
        path = v.removeprefix("file:")
        parts = path.split("/")
        if (
            not path
            or len(path.encode()) > MAX_ANSWER_PATH
            or path.startswith("/")
            or any(p in ("", ".", "..") for p in parts)
            or any(ord(c) < 32 or c == "\x7f" for c in path)
        ):
            raise ValueError(
                f"answer file {path!r} must be a plain relative path inside the workspace (no "
                f"'..', '.', empty parts or control characters; at most {MAX_ANSWER_PATH} bytes)"
            )
        return v

    @property
    def answer_file(self) -> str | None:
        return self.answer.removeprefix("file:") if self.answer != "stdout" else None

    def model_id(self, job: str) -> str:
        return self.model or job

    def check(self, params: dict[str, ParamDecl]) -> None:
        """Raises ValueError when the job's params cannot take a chat request."""
        decl = params.get(self.input)
        if decl is None:
            raise ValueError(f"openai.input {self.input!r} names no declared param")
        wanted = "str" if self.format == "text" else "json"
        if decl.type != wanted:
            raise ValueError(
                f"openai.input {self.input!r} must be a {wanted} param for format "
                f"{self.format!r} (it is {decl.type})"
            )
        # a chat request brings the conversation and nothing else: every other param must
        # do without a value
        for name, other in params.items():
            if name != self.input and other.is_required:
                raise ValueError(
                    f"param {name!r} is required, but a chat completion gives only "
                    f"{self.input!r}: give it a default"
                )
