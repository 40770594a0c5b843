"""Tools in OpenAI's shapes — chat's {"type": "function", "function": {...}} and the Responses API's
flat {"type": "function", "name": ...} — turned into one ToolRequest: the functions, the choice among
them, and what the engine and the parser need from them."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from pyinfer.sampling_params import SamplingParamsError, StructuredOutput
from pyinfer.schema_support import check_enforceable, strict_normalized, unenforceable
from pyinfer.server.protocol_base import NAME_PATTERN, Settings
from pyinfer.server.tool_formats import ToolFormat
from pyinfer.server.tool_grammar import structural_tag
from pyinfer.server.tool_parser import BesidesCalls, ToolCallParser

FUNCTION_NAME = re.compile(NAME_PATTERN)


# ---- requests -------------------------------------------------------------------------------------
class FunctionDefinition(Settings):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None  # chat's default: not strict


class ChatTool(Settings):
    type: Literal["function"]
    function: FunctionDefinition


class ResponsesTool(FunctionDefinition):
    """The Responses API's function tool: the definition's fields beside `type`. Without `strict` it is
    strict where its parameters can be, as at OpenAI: normalized (every property required, no keys beyond
    them where an object says nothing of them); where the normalized schema is not one the grammar wholly
    enforces, the parameters stay as written and the tool is not strict. `strict: false` opts out."""

    type: Literal["function"]
    output_schema: dict[str, Any] | None = None  # what its output holds: shown to the model with the rest
    # how OpenAI may call it, beyond a call in the reply (the only way here): their no-op values taken
    defer_loading: bool | None = None
    allowed_callers: list[Literal["direct", "programmatic"]] | None = None
    async_: bool | None = Field(None, alias="async")

    @model_validator(mode="after")
    def _direct_calls_only(self) -> ResponsesTool:
        if self.defer_loading:
            raise ValueError("defer_loading: tools loaded by a tool search are not supported")
        if self.allowed_callers is not None and "direct" not in self.allowed_callers:
            raise ValueError("allowed_callers: only direct calls, in the reply, are made here")
        if self.async_:
            raise ValueError("async: asynchronous function calls are not supported")
        return self

    @model_validator(mode="after")
    def _strict_where_it_can_be(self) -> ResponsesTool:
        if self.strict is None:
            normalized = strict_normalized(self.parameters or {})
            self.strict = unenforceable(normalized) is None
            if self.strict and self.parameters is not None:
                self.parameters = normalized
        return self

    @model_validator(mode="before")
    @classmethod
    def _served_kind(cls, data: Any) -> Any:
        """Another kind of tool (web_search, file_search, ...) is named as such, not as a function
        missing its name."""
        if isinstance(data, dict) and data.get("type", "function") != "function":
            raise ValueError(f"tools of type {data['type']!r} are not served here, only type 'function'")
        return data


class FunctionName(Settings):
    name: str


class ChatNamedToolChoice(Settings):
    type: Literal["function"]
    function: FunctionName

    def selection(self) -> tuple[str, list[str]]:
        """(mode, the functions the model may call)"""
        return "named", [self.function.name]


class ChatAllowedTools(Settings):
    mode: Literal["auto", "required"]
    tools: list[ChatNamedToolChoice] = Field(min_length=1)


class ChatAllowedToolsChoice(Settings):
    """All the tools stay in the prompt (and its cached prefix); the model may call only these."""

    type: Literal["allowed_tools"]
    allowed_tools: ChatAllowedTools

    def selection(self) -> tuple[str, list[str]]:
        return self.allowed_tools.mode, [t.function.name for t in self.allowed_tools.tools]


class ResponsesNamedToolChoice(Settings):
    type: Literal["function"]
    name: str

    def selection(self) -> tuple[str, list[str]]:
        return "named", [self.name]


class ResponsesAllowedToolsChoice(Settings):
    type: Literal["allowed_tools"]
    mode: Literal["auto", "required"]
    tools: list[ResponsesNamedToolChoice] = Field(min_length=1)

    def selection(self) -> tuple[str, list[str]]:
        return self.mode, [t.name for t in self.tools]


ToolChoiceMode = Literal["none", "auto", "required"]
ChatToolChoice = ChatNamedToolChoice | ChatAllowedToolsChoice
ResponsesToolChoice = ResponsesNamedToolChoice | ResponsesAllowedToolsChoice


class ToolRequest:
    """A request's tools and how it lets the model use them: `mode` none (it answers in text), auto,
    required, or named (it must call the one function `allowed` names); `allowed` None: any of them;
    `parallel` None: the format's default."""

    def __init__(
        self,
        functions: list[FunctionDefinition],
        mode: str,
        allowed: list[str] | None,
        parallel: bool | None,
    ):
        self.functions = functions
        self.mode = mode
        self.allowed = allowed
        self.parallel = parallel
        self.besides_calls: BesidesCalls = "text" if mode == "auto" else "nothing"  # constraint() may widen

    @classmethod
    def of(
        cls,
        functions: list[FunctionDefinition] | None,
        choice: ToolChoiceMode | ChatToolChoice | ResponsesToolChoice | None,
        parallel: bool | None,
    ) -> ToolRequest | None:
        """The request's tools, checked (a 400 naming `tools`, `tool_choice` or `parallel_tool_calls`).
        None without tools."""
        functions = functions or []
        if not functions:
            for param, given in (("tool_choice", choice), ("parallel_tool_calls", parallel)):
                if given is not None:
                    raise SamplingParamsError(param, "is only allowed when tools are given")
            return None
        names = [f.name for f in functions]
        for i, name in enumerate(names):
            if not FUNCTION_NAME.fullmatch(name):  # not match: `$` would let a trailing newline through
                raise SamplingParamsError(
                    f"tools[{i}]", f"function name {name!r} must match {FUNCTION_NAME.pattern}"
                )
        if len(set(names)) != len(names):
            raise SamplingParamsError("tools", "function names must be unique")
        for i, f in enumerate(functions):
            if f.parameters is not None and f.parameters.get("type", "object") != "object":
                raise SamplingParamsError(
                    f"tools[{i}]", f"parameters of {f.name!r} must be a JSON schema of an object"
                )
        if choice is None or isinstance(choice, str):
            return cls(functions, choice or "auto", None, parallel)
        mode, allowed = choice.selection()
        for name in allowed:
            if name not in names:
                raise SamplingParamsError(
                    "tool_choice", f"names the function {name!r}, which is not among the tools"
                )
        return cls(functions, mode, allowed, parallel)

    @property
    def active(self) -> bool:
        """Whether the model is offered the tools (tool_choice none: it answers in text)."""
        return self.mode != "none"

    def parallel_in(self, fmt: ToolFormat) -> bool:
        return fmt.parallel_by_default if self.parallel is None else self.parallel

    def template_tools(self) -> list[dict[str, Any]]:
        """The tools as chat templates take them (OpenAI's chat shape)."""
        return [{"type": "function", "function": _definition(f)} for f in self.functions]

    def constraint(self, fmt: ToolFormat, output: StructuredOutput | None) -> StructuredOutput:
        """The grammar the reply is decoded under: calls in `fmt`, their arguments valid for the schemas;
        under auto, with `output` (a JSON schema the request gave its text), calls or that JSON (which
        the parsers made after this call are told)."""
        if output is not None and output.kind != "json":
            raise SamplingParamsError(
                output.param.split(".")[0], "cannot be combined with tools, but a JSON schema can"
            )
        for i, f in enumerate(self.functions):
            if f.parameters is not None:
                check_enforceable(f.parameters, f"tools[{i}]", f.strict is True, f"{f.name}.parameters")
        if output is not None:
            check_enforceable(json.loads(output.spec), output.param, output.strict)
        callable_ = [f for f in self.functions if self.allowed is None or f.name in self.allowed]
        if output is not None and self.mode == "auto":
            self.besides_calls = "json"
        spec = structural_tag(
            fmt,
            [_definition(f) for f in callable_],
            self.mode,
            self.parallel_in(fmt),
            json.loads(output.spec) if output is not None and self.mode == "auto" else None,
        )
        return StructuredOutput(kind="structural_tag", spec=spec, param="tools")

    def parser(self, fmt: ToolFormat, on_failure: Callable[[], None]) -> ToolCallParser:
        return ToolCallParser(fmt, {f.name for f in self.functions}, on_failure, self.besides_calls)


def _definition(function: FunctionDefinition) -> dict[str, Any]:
    """The function's definition as the model is shown it: without the Responses API's `type` beside it
    and the ways of calling it that change nothing here."""
    return function.model_dump(
        exclude_none=True, exclude={"type", "defer_loading", "allowed_callers", "async_"}
    )


def check_tool_results(messages: list[dict[str, Any]], param: str) -> None:
    """Each tool result answers a call an earlier assistant message made (a 400 naming `param`, as at
    OpenAI): a result of no call is a client's slip that would only mislead the model."""
    calls: set[str] = set()
    for message in messages:
        calls.update(call["id"] for call in message.get("tool_calls") or ())
        if message["role"] == "tool" and message.get("tool_call_id") not in calls:
            raise SamplingParamsError(
                param,
                f"has a tool result for the call {message.get('tool_call_id')!r}, which no earlier call in "
                "the conversation made",
            )


def template_tool_call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    """An earlier call as chat templates take it: arguments as an object where they parse as one."""
    try:
        parsed: Any = json.loads(arguments)
    except ValueError:
        parsed = arguments
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": parsed}}


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
