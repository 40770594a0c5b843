"""How a model writes tool calls: the formats we parse, and which one a chat template implies.

Every format writes a call as a JSON object with the function's name and its arguments:
- hermes (Hermes, Qwen; also our generic prompt): <tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>
- llama3_json (Llama 3.1-3.3): {"name": ..., "parameters": {...}}, optionally after <|python_tag|>, calls
  separated by "; "
- mistral: [TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]
"""

from __future__ import annotations

import json
import secrets
import string
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
    id_length: int = 0  # call ids of exactly this many letters and digits (0: OpenAI's call_...)
    parallel_by_default: bool = True  # whether a request that does not say allows several calls a turn

    def call_id(self) -> str:
        if self.id_length:
            return "".join(
                secrets.choice(string.ascii_letters + string.digits) for _ in range(self.id_length)
            )
        return f"call_{secrets.token_hex(12)}"

    def write_calls(self, calls: list[tuple[str, Any]]) -> str:
        """Calls (name, arguments) as the model writes them in this format."""
        objects = [
            f"{self.call_begin}{json.dumps({'name': name, self.arguments_key: arguments}, ensure_ascii=False)}"
            f"{self.call_end}"
            for name, arguments in calls
        ]
        return self.block_begin + self.separator.join(objects) + self.block_end


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
    object_trigger='{"name": ',  # as the grammar's trigger: the object opens a call where it forces one
    parallel_by_default=False,  # Llama 3.1's own template refuses a history of several calls a turn
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
    id_length=9,  # Mistral's templates refuse other ids
)
FORMATS = {f.name: f for f in (HERMES, LLAMA3_JSON, MISTRAL)}
PARSER_CHOICES = ("auto", "generic", *FORMATS)  # --tool-call-parser


@dataclass(frozen=True)
class ToolSupport:
    """How this server's model is given tools and how its calls are read."""

    format: ToolFormat
    template_renders_tools: bool  # False: our generic prompt lists the tools and asks for this format


def tool_support(chat_template: str | dict[str, str] | None, parser: str = "auto") -> ToolSupport:
    """The format a chat template implies (its `tools` variable and the markup it writes), unless
    `parser` names one; a template that knows no tools gets the generic prompt."""
    if isinstance(chat_template, dict):  # named templates; transformers picks "tool_use" for tools
        chat_template = chat_template.get("tool_use") or chat_template.get("default") or ""
    source = chat_template or ""
    renders = _uses_tools(source)
    if parser == "generic":  # our prompt whatever the template knows
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
