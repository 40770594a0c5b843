"""Tools and a conversation's earlier calls put into the prompt: by the model's chat template where it
knows tools (its `tools` variable), else by our generic prompt, so that tools work with every model.

The generic prompt lists the tools as JSON schemas in a system message and asks for calls in the
server's format (hermes unless --tool-call-parser names another); earlier calls are written back in it, and tool results as a user turn of
<tool_response> blocks (templates without tools often know no `tool` role). Of the wordings tried on
the embedded SmolLM2, only this one let it answer after a result rather than repeat its call.
"""

from __future__ import annotations

import json
from typing import Any

from pyinfer.server.protocol_tools import ToolRequest
from pyinfer.server.tool_formats import ToolFormat, ToolSupport

GENERIC_INSTRUCTIONS = """You can call functions to answer the user. They are described by these JSON schemas:
<tools>
{tools}
</tools>
To call functions, write one block per call, each holding a JSON object with the function's name and \
its arguments, and nothing after the blocks:
<tool_call>
{{"name": "<function name>", "arguments": {{<arguments>}}}}
</tool_call>
When you have what you need, answer in plain text instead."""
TOOL_RESULT = "<tool_response>\n{content}\n</tool_response>"
MUST_CALL = {"required": "Call at least one function now.", "named": "Call the function {name} now."}


def chat_prompt(
    messages: list[dict[str, Any]], tools: ToolRequest | None, support: ToolSupport
) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """The messages for the chat template, and its `tools` variable (None: not given)."""
    offered = tools.template_tools() if tools is not None and tools.active else None
    if support.template_renders_tools:
        return messages, offered
    messages = _generic_history(messages, support.format)
    if offered and tools is not None:
        messages = _with_instructions(messages, _instructions(offered, tools, support.format))
    return messages, None


def _instructions(offered: list[dict[str, Any]], tools: ToolRequest, fmt: ToolFormat) -> str:
    example = fmt.write_calls([("<function name>", {"<argument>": "<value>"})])
    text = GENERIC_INSTRUCTIONS.format(
        tools="\n".join(json.dumps(t["function"]) for t in offered), example=example
    )
    # allowed_tools is left to the grammar: naming them here would change the prompt's cached prefix
    if tools.mode == "required":
        text += "\n" + MUST_CALL["required"]
    elif tools.mode == "named":
        assert tools.allowed is not None
        text += "\n" + MUST_CALL["named"].format(name=tools.allowed[0])
    return text


def _with_instructions(messages: list[dict[str, Any]], instructions: str) -> list[dict[str, Any]]:
    if messages and messages[0]["role"] == "system":
        first = dict(messages[0], content=f"{messages[0]['content']}\n\n{instructions}")
        return [first, *messages[1:]]
    return [{"role": "system", "content": instructions}, *messages]


def _generic_history(messages: list[dict[str, Any]], fmt: ToolFormat) -> list[dict[str, Any]]:
    """Earlier calls written as the model wrote them; consecutive tool results joined in one user turn."""
    out: list[dict[str, Any]] = []
    for m in messages:
        if m["role"] == "tool":
            result = TOOL_RESULT.format(content=m["content"])
            if out and out[-1].get("tool_results"):
                out[-1] = dict(out[-1], content=f"{out[-1]['content']}\n{result}")
            else:
                out.append({"role": "user", "content": result, "tool_results": True})
        elif m.get("tool_calls"):
            calls = fmt.write_calls(
                [(c["function"]["name"], c["function"]["arguments"]) for c in m["tool_calls"]]
            )
            content = "\n".join([m["content"], calls] if m["content"] else [calls])
            out.append({k: v for k, v in m.items() if k != "tool_calls"} | {"content": content})  # name kept
        else:
            out.append(m)
    return [{k: v for k, v in m.items() if k != "tool_results"} for m in out]
