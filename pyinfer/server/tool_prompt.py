"""Tools and a conversation's earlier calls put into the prompt: by the model's chat template where it
knows tools (its `tools` variable), else by our generic prompt, so that tools work with every model.

The generic prompt lists the tools as JSON schemas in a system message and asks for calls in the
hermes format; earlier calls are written back in that format, and tool results as a user turn of
<tool_response> blocks (templates without tools often know no `tool` role). Of the wordings tried on
the embedded SmolLM2, only this one let it answer after a result rather than repeat its call.
"""

from __future__ import annotations

import json
from typing import Any

from pyinfer.server.protocol_tools import ToolRequest
from pyinfer.server.tool_formats import HERMES, ToolSupport

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
    messages = _generic_history(messages)
    if offered and tools is not None:
        messages = _with_instructions(messages, _instructions(offered, tools.choice))
    return messages, None


def _instructions(offered: list[dict[str, Any]], choice: str) -> str:
    text = GENERIC_INSTRUCTIONS.format(tools="\n".join(json.dumps(t["function"]) for t in offered))
    if choice == "required":
        text += "\n" + MUST_CALL["required"]
    elif choice != "auto":
        text += "\n" + MUST_CALL["named"].format(name=choice)
    return text


def _with_instructions(messages: list[dict[str, Any]], instructions: str) -> list[dict[str, Any]]:
    if messages and messages[0]["role"] == "system":
        first = dict(messages[0], content=f"{messages[0]['content']}\n\n{instructions}")
        return [first, *messages[1:]]
    return [{"role": "system", "content": instructions}, *messages]


def _generic_history(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
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
            calls = [_written_call(c["function"]) for c in m["tool_calls"]]
            content = "\n".join(([m["content"]] if m["content"] else []) + calls)
            out.append({"role": m["role"], "content": content})
        else:
            out.append(m)
    return [{k: v for k, v in m.items() if k != "tool_results"} for m in out]


def _written_call(function: dict[str, Any]) -> str:
    call = {"name": function["name"], HERMES.arguments_key: function["arguments"]}
    return f"{HERMES.call_begin}{json.dumps(call, ensure_ascii=False)}{HERMES.call_end}"
