"""How a model writes tool calls: the formats we parse, which one a chat template implies, and the
grammar (an xgrammar structural tag) that makes a model's calls follow its format and the tools' schemas.

Every format writes a call as a JSON object with the function's name and its arguments:
- hermes (Hermes, Qwen; also our generic prompt): <tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>
- llama3_json (Llama 3.1-3.3): {"name": ..., "parameters": {...}}, optionally after <|python_tag|>, calls
  separated by "; "
- mistral: [TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import jinja2
import jinja2.meta


@dataclass(frozen=True)
class ToolFormat:
    name: str
    arguments_key: str  # the call object's key for the arguments
    call_begin: str  # written before each call object (the grammar's spelling)
    call_end: str  # written after each call object
    separator: str  # between two calls
    grammar_trigger: str  # what starts every call's (or block's) spelling: free text ends there
    block_begin: str = ""  # before the first call of a turn
    block_end: str = ""  # after the last
    triggers: tuple[str, ...] = ()  # markup that opens calls in free text, for the parser
    object_trigger: str = ""  # text that opens a call by being the start of the call object


HERMES = ToolFormat(
    name="hermes",
    arguments_key="arguments",
    call_begin="<tool_call>\n",
    call_end="\n</tool_call>",
    separator="\n",
    grammar_trigger="<tool_call>",
    triggers=("<tool_call>",),
)
LLAMA3_JSON = ToolFormat(
    name="llama3_json",
    arguments_key="parameters",
    call_begin="",
    call_end="",
    separator="; ",
    grammar_trigger='{"name": ',
    triggers=("<|python_tag|>",),
    object_trigger='{"name"',
)
MISTRAL = ToolFormat(
    name="mistral",
    arguments_key="arguments",
    call_begin="",
    call_end="",
    separator=", ",
    block_begin="[TOOL_CALLS][",
    block_end="]",
    grammar_trigger="[TOOL_CALLS]",
    triggers=("[TOOL_CALLS]",),
)
FORMATS = {f.name: f for f in (HERMES, LLAMA3_JSON, MISTRAL)}
PARSER_CHOICES = ("auto", "generic", *FORMATS)  # --tool-call-parser


@dataclass(frozen=True)
class ToolSupport:
    """How this server's model is given tools and how its calls are read."""

    format: ToolFormat
    template_renders_tools: bool  # False: our generic prompt lists the tools (in the hermes format)


def tool_support(chat_template: str | dict[str, str] | None, parser: str = "auto") -> ToolSupport:
    """The format a chat template implies (its `tools` variable and the markup it writes), unless
    `parser` names one; a template that knows no tools gets the generic prompt."""
    if isinstance(chat_template, dict):  # named templates; transformers picks "tool_use" for tools
        chat_template = chat_template.get("tool_use") or chat_template.get("default") or ""
    source = chat_template or ""
    renders = _uses_tools(source)
    if parser == "generic":
        return ToolSupport(HERMES, template_renders_tools=False)
    if parser != "auto":
        return ToolSupport(FORMATS[parser], template_renders_tools=renders)
    if renders:  # the most distinctive markup first: Llama's hints ("parameters") are plain words
        if "<tool_call>" in source:
            return ToolSupport(HERMES, True)
        if "[TOOL_CALLS]" in source:
            return ToolSupport(MISTRAL, True)
        if "<|python_tag|>" in source or '"parameters"' in source or "ipython" in source:
            return ToolSupport(LLAMA3_JSON, True)
    return ToolSupport(HERMES, template_renders_tools=False)


def _uses_tools(source: str) -> bool:
    try:
        return "tools" in jinja2.meta.find_undeclared_variables(jinja2.Environment().parse(source))
    except jinja2.TemplateSyntaxError:
        return False


def structural_tag(
    fmt: ToolFormat,
    functions: list[dict[str, Any]],
    choice: str,
    parallel: bool,
    max_whitespace: int,
    text_schema: dict[str, Any] | None = None,
) -> str:
    """The grammar of a turn under `choice` (auto, required, or one function's name), as xgrammar's
    structural tag in JSON: under auto free text until the format's trigger (or, with `text_schema`,
    either calls or JSON valid for it), then only well-formed calls of the given functions with
    arguments valid for their schemas."""

    def tag(function: dict[str, Any]) -> dict[str, Any]:
        begin = f'{fmt.call_begin}{{"name": {json.dumps(function["name"])}, "{fmt.arguments_key}": '
        schema = function.get("parameters") or {"type": "object"}
        content = {"type": "json_schema", "json_schema": schema, "max_whitespace_cnt": max_whitespace}
        return {"type": "tag", "begin": begin, "content": content, "end": "}" + fmt.call_end}

    chosen = functions if choice in ("auto", "required") else [f for f in functions if f["name"] == choice]
    one_call = not parallel or choice not in ("auto", "required")
    tags = [tag(f) for f in chosen]
    calls = {
        "type": "tags_with_separator",
        "tags": tags,
        "separator": fmt.separator,
        "at_least_one": True,
        "stop_after_first": one_call,
    }
    if fmt.block_begin:  # the calls of a turn in one block, opened by the trigger
        calls = {"type": "tag", "begin": fmt.block_begin, "content": calls, "end": fmt.block_end}
    if choice != "auto":
        turn = calls
    elif text_schema is not None:
        text = {"type": "json_schema", "json_schema": text_schema, "max_whitespace_cnt": max_whitespace}
        turn = {"type": "or", "elements": [calls, text]}
    elif fmt.block_begin:
        turn = _triggered([calls], fmt, one_call=True)
    else:
        turn = _triggered(tags, fmt, one_call)
    return json.dumps({"type": "structural_tag", "format": turn})


def _triggered(tags: list[dict[str, Any]], fmt: ToolFormat, one_call: bool) -> dict[str, Any]:
    """Free text until the format's trigger is written, then one of `tags`."""
    return {
        "type": "triggered_tags",
        "triggers": [fmt.grammar_trigger],
        "tags": tags,
        "stop_after_first": one_call,
    }
