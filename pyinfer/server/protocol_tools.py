"""Tools in OpenAI's shapes — chat's {"type": "function", "function": {...}} and the Responses API's
flat {"type": "function", "name": ...} — turned into one ToolRequest: the functions, the choice among
them, and what the engine and the parser need from them."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, Field

from pyinfer.engine.sampling_params import SamplingParamsError, StructuredOutput
from pyinfer.server.protocol_base import Request
from pyinfer.server.tool_formats import ToolFormat, structural_tag
from pyinfer.server.tool_parser import ToolCallParser

FUNCTION_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")  # as OpenAI checks them
MAX_ARGUMENT_WHITESPACE = 16  # as for JSON output: no call loops on spaces until max_tokens


# ---- requests -------------------------------------------------------------------------------------
class FunctionDefinition(Request):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ChatTool(Request):
    type: Literal["function"]
    function: FunctionDefinition


class ResponsesTool(FunctionDefinition):
    """The Responses API's function tool: the definition's fields beside `type`."""

    type: Literal["function"]


class FunctionName(Request):
    name: str


class ChatNamedToolChoice(Request):
    type: Literal["function"]
    function: FunctionName


class ResponsesNamedToolChoice(Request):
    type: Literal["function"]
    name: str


ToolChoiceMode = Literal["none", "auto", "required"]


class ToolRequest:
    """A request's tools and how it lets the model use them: `choice` is none, auto, required or the
    name of the one function it must call."""

    def __init__(self, functions: list[FunctionDefinition], choice: str, parallel: bool):
        self.functions = functions
        self.choice = choice
        self.parallel = parallel

    @classmethod
    def of(
        cls,
        functions: list[FunctionDefinition] | None,
        choice: str | None,
        parallel: bool | None,
    ) -> ToolRequest | None:
        """The request's tools, checked (a 400 naming `tools` or `tool_choice`); None without tools."""
        functions = functions or []
        names = [f.name for f in functions]
        for name in names:
            if not FUNCTION_NAME.match(name):
                raise SamplingParamsError(
                    "tools", f"function name {name!r} must match {FUNCTION_NAME.pattern}"
                )
        if len(set(names)) != len(names):
            raise SamplingParamsError("tools", "function names must be unique")
        for f in functions:
            if f.parameters is not None and f.parameters.get("type", "object") != "object":
                raise SamplingParamsError(
                    "tools", f"parameters of {f.name!r} must be a JSON schema of an object"
                )
        if choice is None:
            choice = "auto" if functions else "none"
        if choice not in ("none", "auto") and not functions:
            raise SamplingParamsError("tool_choice", f"{choice!r} needs tools")
        if choice not in ("none", "auto", "required") and choice not in names:
            raise SamplingParamsError(
                "tool_choice", f"names the function {choice!r}, which is not among the tools"
            )
        if not functions:
            return None
        return cls(functions, choice, True if parallel is None else parallel)

    @property
    def active(self) -> bool:
        """Whether the model is offered the tools (tool_choice none: it answers in text)."""
        return self.choice != "none"

    def template_tools(self) -> list[dict[str, Any]]:
        """The tools as chat templates take them (OpenAI's chat shape)."""
        return [{"type": "function", "function": _definition(f)} for f in self.functions]

    def constraint(self, fmt: ToolFormat, output: StructuredOutput | None) -> StructuredOutput:
        """The grammar the reply is decoded under: calls in `fmt`, their arguments valid for the schemas;
        under auto, with `output` (a JSON schema the request gave its text), calls or that JSON."""
        if output is not None and output.kind != "json":
            raise SamplingParamsError(
                output.param.split(".")[0], "cannot be combined with tools, but a JSON schema can"
            )
        spec = structural_tag(
            fmt,
            [_definition(f) for f in self.functions],
            self.choice,
            self.parallel,
            MAX_ARGUMENT_WHITESPACE,
            json.loads(output.spec) if output is not None else None,
        )
        return StructuredOutput(kind="structural_tag", spec=spec, param="tools")

    def parser(self, fmt: ToolFormat, on_failure: Callable[[], None]) -> ToolCallParser:
        return ToolCallParser(fmt, {f.name for f in self.functions}, on_failure)


def _definition(function: FunctionDefinition) -> dict[str, Any]:
    """The function's definition without the Responses API's `type` beside it."""
    return function.model_dump(exclude_none=True, exclude={"type"})


def chat_tool_choice(choice: ToolChoiceMode | ChatNamedToolChoice | None) -> str | None:
    return choice.function.name if isinstance(choice, ChatNamedToolChoice) else choice


def responses_tool_choice(choice: ToolChoiceMode | ResponsesNamedToolChoice | None) -> str | None:
    return choice.name if isinstance(choice, ResponsesNamedToolChoice) else choice


# ---- replies --------------------------------------------------------------------------------------
class FunctionCall(BaseModel):
    name: str
    arguments: str


class ToolCall(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class FunctionCallDelta(BaseModel):
    name: str | None = Field(default=None, exclude_if=lambda v: v is None)
    arguments: str


class ToolCallChunk(BaseModel):
    """A streamed piece of a call: the first names it (id, type, name); the rest add arguments."""

    index: int
    id: str | None = Field(default=None, exclude_if=lambda v: v is None)
    type: Literal["function"] | None = Field(default=None, exclude_if=lambda v: v is None)
    function: FunctionCallDelta
