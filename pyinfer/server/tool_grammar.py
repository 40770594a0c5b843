"""The grammar that makes a model's tool calls follow its format and the tools' schemas, as an xgrammar
structural tag (compiled in the engine like any other constraint)."""

from __future__ import annotations

import json
from typing import Any

from pyinfer.schema_support import for_grammar
from pyinfer.server.tool_formats import ToolFormat


def structural_tag(
    fmt: ToolFormat,
    functions: list[dict[str, Any]],
    mode: str,
    parallel: bool,
    text_schema: dict[str, Any] | None = None,
) -> str:
    """The grammar of a turn, as a structural tag in JSON. `mode` auto: free text until the format's
    trigger (or, with `text_schema`, either calls or JSON valid for it), then only well-formed calls
    of `functions` with arguments valid for their schemas; required: calls only; named: a call of
    the one function given."""

    def tag(function: dict[str, Any]) -> dict[str, Any]:
        begin = f'{fmt.call_begin}{{"name": {json.dumps(function["name"])}, "{fmt.arguments_key}": '
        schema = function.get("parameters")
        if takes_nothing(schema):  # an empty argument list, as OpenAI documents, written `{}`
            content = {"type": "const_string", "value": "{}"}
        else:
            content = {"type": "json_schema", "json_schema": for_grammar(schema)}
        return {"type": "tag", "begin": begin, "content": content, "end": "}" + fmt.call_end}

    one_call = not parallel or mode == "named"
    tags = [tag(f) for f in functions]
    calls = {
        "type": "tags_with_separator",
        "tags": tags,
        "separator": fmt.separator,
        "at_least_one": True,
        "stop_after_first": one_call,
    }
    if fmt.block_begin:  # the calls of a turn in one block, opened by the trigger
        calls = {"type": "tag", "begin": fmt.block_begin, "content": calls, "end": fmt.block_end}
    if mode != "auto":
        turn = calls
    elif text_schema is not None:
        text = {"type": "json_schema", "json_schema": for_grammar(text_schema)}
        turn = {"type": "or", "elements": [calls, text]}
    elif fmt.block_begin:
        turn = _triggered([calls], fmt, one_call=True)
    else:
        turn = _triggered(tags, fmt, one_call)
    return json.dumps({"type": "structural_tag", "format": turn})


# what a schema of no parameters may say besides: it is an object, of no properties, none required
EMPTY_OBJECT_WORDS = {
    "type",
    "properties",
    "required",
    "additionalProperties",
    "title",
    "description",
    "$schema",
}


def takes_nothing(parameters: dict[str, Any] | None) -> bool:
    """Whether a function's `parameters` admit only the empty object: left out, `{}`, or an object of no
    properties and none other allowed (as SDKs describe a function of no arguments; xgrammar reads a
    missing additionalProperties as false)."""
    if not parameters:
        return True
    return (
        parameters.keys() <= EMPTY_OBJECT_WORDS
        and parameters.get("type") == "object"
        and not parameters.get("properties")
        and not parameters.get("required")
        and parameters.get("additionalProperties") in (None, False)
    )


def _triggered(tags: list[dict[str, Any]], fmt: ToolFormat, one_call: bool) -> dict[str, Any]:
    """Free text until the format's trigger is written, then one of `tags`."""
    return {
        "type": "triggered_tags",
        "triggers": [fmt.grammar_trigger],
        "tags": tags,
        "stop_after_first": one_call,
    }
