"""The request fields that constrain the output, as OpenAI and vLLM name them, turned into one
StructuredOutput for the engine: `response_format` (chat and completions), the Responses API's
`text.format`, and vLLM's `structured_outputs` (json, regex, choice, grammar, json_object)."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import Field

from pyinfer.sampling_params import SamplingParamsError, StructuredOutput
from pyinfer.server.protocol_base import NAME_PATTERN, Settings

ANY_OBJECT = '{"type": "object"}'  # json_object: any JSON object, as OpenAI's JSON mode promises


class JsonSchema(Settings):
    name: str = Field(pattern=NAME_PATTERN)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(Settings):
    """Chat and completions: {"type": "text" | "json_object" | "json_schema", "json_schema": {...}}."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchema | None = None

    def constraint(self) -> StructuredOutput | None:
        schema = self.json_schema.schema_ if self.json_schema else None
        strict = self.json_schema is not None and self.json_schema.strict is True
        return _format_constraint(self.type, schema, "response_format", strict)


class TextFormat(Settings):
    """The Responses API's text.format: the same choices, the schema's fields beside `type`."""

    type: Literal["text", "json_object", "json_schema"] = "text"
    name: str | None = Field(default=None, pattern=NAME_PATTERN)  # required for json_schema
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None

    def constraint(self) -> StructuredOutput | None:
        if self.type == "json_schema" and self.name is None:
            raise SamplingParamsError("text.format.name", "is required when text.format.type is json_schema")
        return _format_constraint(self.type, self.schema_, "text.format", self.strict is True)


class StructuredOutputs(Settings):
    """vLLM's `structured_outputs`: exactly one of its fields."""

    json_: dict[str, Any] | str | None = Field(default=None, alias="json")
    regex: str | None = None
    choice: list[str] | None = None
    grammar: str | None = None
    json_object: bool | None = None

    def constraint(self) -> StructuredOutput:
        given = {
            name: value
            for name, value in (
                ("json", self.json_),
                ("regex", self.regex),
                ("choice", self.choice),
                ("grammar", self.grammar),
                ("json_object", self.json_object or None),
            )
            if value is not None
        }
        if len(given) != 1:
            raise SamplingParamsError(
                "structured_outputs", "needs exactly one of json, regex, choice, grammar, json_object"
            )
        ((name, value),) = given.items()
        param = f"structured_outputs.{name}"
        if name == "json":
            return StructuredOutput(
                kind="json", spec=value if isinstance(value, str) else json.dumps(value), param=param
            )
        if name == "json_object":
            return StructuredOutput(kind="json", spec=ANY_OBJECT, param=param)
        if name == "choice":
            if not value or not all(value):
                raise SamplingParamsError(param, "needs at least one choice, none of them empty")
            return StructuredOutput(kind="choice", spec=json.dumps(value), param=param)
        return StructuredOutput(kind=name, spec=value, param=param)


def _format_constraint(
    kind: str, schema: dict[str, Any] | None, param: str, strict: bool
) -> StructuredOutput | None:
    """OpenAI's output formats: text (none), json_object (any object), json_schema (its schema)."""
    if kind == "text":
        return None
    if kind == "json_object":
        return StructuredOutput(kind="json", spec=ANY_OBJECT, param=param)
    if schema is None:
        raise SamplingParamsError(param, "of type json_schema needs a schema")
    return StructuredOutput(kind="json", spec=json.dumps(schema), param=param, strict=strict)


def one_constraint(*constraints: StructuredOutput | None) -> StructuredOutput | None:
    """The request's constraint; two fields that each constrain the output are an error."""
    given = [c for c in constraints if c is not None]
    if len(given) > 1:
        names = " and ".join(c.param.split(".")[0] for c in given)
        raise SamplingParamsError(
            given[1].param.split(".")[0], f"cannot be combined: {names} both constrain the output"
        )
    return given[0] if given else None
