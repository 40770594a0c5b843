"""Which tool-call format a chat template implies."""

from __future__ import annotations

from pyinfer.server.tool_formats import HERMES, LLAMA3_JSON, MISTRAL, tool_support

TEMPLATES = {
    "hermes": "{% for t in tools %}{{ t | tojson }}{% endfor %}<tool_call>{{ messages }}",
    "llama3_json": '{% if tools %}{"name": function name, "parameters": ...}{% endif %}<|python_tag|>',
    "mistral": "{% if tools %}[AVAILABLE_TOOLS]{{ tools | tojson }}{% endif %}[TOOL_CALLS]",
}
CHATML = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>{% endfor %}"


def test_the_format_follows_the_chat_template_unless_named():
    for name, template in TEMPLATES.items():
        support = tool_support(template)
        assert (support.format.name, support.template_renders_tools) == (name, True)
    assert tool_support(CHATML) == tool_support(None)
    assert (tool_support(CHATML).format, tool_support(CHATML).template_renders_tools) == (HERMES, False)
    assert tool_support(TEMPLATES["hermes"], "llama3_json").format is LLAMA3_JSON
    assert not tool_support(TEMPLATES["hermes"], "generic").template_renders_tools
    assert tool_support({"default": CHATML, "tool_use": TEMPLATES["mistral"]}).format is MISTRAL
    # a named format for a template without tools: our prompt, asking for that format
    assert tool_support(CHATML, "mistral") == type(tool_support(CHATML))(MISTRAL, False)
