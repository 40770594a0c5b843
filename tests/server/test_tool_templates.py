"""Models whose chat templates render tools: tiny random Llamas carrying a Llama 3.1-style and a
Hermes-style template (written here), served for real; their calls read in the template's format."""

from __future__ import annotations

import json
from collections.abc import Iterator

import jsonschema
import openai
import pytest

from tests.conftest import TINY_LLAMA, write_random_llama
from tests.server.helpers import ServerProcess, running_server
from tests.server.test_tools import streamed_calls

LLAMA31_TEMPLATE = """{{- bos_token }}
{%- if tools %}<|start_header_id|>system<|end_header_id|>

Environment: ipython
Call a function by replying with {"name": function name, "parameters": dictionary of arguments}.
{% for t in tools %}{{ t | tojson }}
{% endfor %}<|eot_id|>
{%- endif %}
{%- for m in messages %}
{%- if m.role == "tool" %}<|start_header_id|>ipython<|end_header_id|>

{{ m.content }}<|eot_id|>
{%- elif m.tool_calls %}<|start_header_id|>assistant<|end_header_id|>

{% for c in m.tool_calls %}{"name": "{{ c.function.name }}", "parameters": {{ c.function.arguments | tojson }}}\
{% endfor %}<|eot_id|>
{%- else %}<|start_header_id|>{{ m.role }}<|end_header_id|>

{{ m.content }}<|eot_id|>
{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>

{% endif %}"""

HERMES_TEMPLATE = """{%- if tools %}<|im_start|>system
You may call these functions:
<tools>
{% for t in tools %}{{ t | tojson }}
{% endfor %}</tools>
Call one as <tool_call>
{"name": <name>, "arguments": <arguments>}
</tool_call><|im_end|>
{% endif %}
{%- for m in messages %}
{%- if m.role == "tool" %}<|im_start|>user
<tool_response>
{{ m.content }}
</tool_response><|im_end|>
{% elif m.tool_calls %}<|im_start|>assistant
{% for c in m.tool_calls %}<tool_call>
{"name": "{{ c.function.name }}", "arguments": {{ c.function.arguments | tojson }}}
</tool_call>{% endfor %}<|im_end|>
{% else %}<|im_start|>{{ m.role }}
{{ m.content }}<|im_end|>
{% endif %}
{%- endfor %}
{%- if add_generation_prompt %}<|im_start|>assistant
{% endif %}"""

TEMPLATES = {"llama3_json": LLAMA31_TEMPLATE, "hermes": HERMES_TEMPLATE}
# Enums and booleans only: a random model under the grammar then always finishes its call
PLAN = {
    "type": "function",
    "function": {
        "name": "plan_trip",
        "description": "Plan a trip.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"enum": ["Paris", "Rome", "Oslo"]},
                "by_train": {"type": "boolean"},
            },
            "required": ["city", "by_train"],
        },
    },
}
OTHER = {
    "type": "function",
    "function": {"name": "cancel", "parameters": {"type": "object", "properties": {}}},
}
QUESTION = [{"role": "user", "content": "Plan a trip to Rome."}]


@pytest.fixture(scope="module", params=list(TEMPLATES))
def templated_server(request, tmp_path_factory, smollm2_path) -> Iterator[tuple[str, ServerProcess]]:
    """A tiny random Llama with SmolLM2's tokenizer and the template of format `request.param`."""
    from pyinfer.tokenizer import Tokenizer

    folder = tmp_path_factory.mktemp(request.param)
    config = {**TINY_LLAMA, "vocab_size": 49152, "max_position_embeddings": 1024}
    write_random_llama(folder, std=0.2, tie_word_embeddings=True, **config)
    tokenizer = Tokenizer(smollm2_path).hf
    tokenizer.chat_template = TEMPLATES[request.param]
    tokenizer.save_pretrained(folder)
    log = tmp_path_factory.mktemp("log") / "server.log"
    with running_server(log, "--model", str(folder), "--num-kv-blocks", "256") as srv:
        yield request.param, srv


@pytest.fixture(scope="module")
def templated(templated_server) -> tuple[str, openai.OpenAI, str]:
    fmt, srv = templated_server
    client = openai.OpenAI(base_url=f"{srv.base_url}/v1", api_key="unused", max_retries=0, timeout=60)
    return fmt, client, client.models.list().data[0].id


def test_the_template_renders_the_tools_and_its_format_is_read(templated_server, templated):
    fmt, srv = templated_server
    _, client, model = templated
    assert f"tools: given by the chat template, calls read as {fmt}" in srv.log()
    plain = client.chat.completions.create(model=model, messages=QUESTION, max_tokens=1)
    offered = client.chat.completions.create(
        model=model, messages=QUESTION, tools=[PLAN], max_tokens=1, tool_choice="none"
    )
    assert plain.usage.prompt_tokens == offered.usage.prompt_tokens  # none: not offered
    offered = client.chat.completions.create(
        model=model, messages=QUESTION, tools=[PLAN], tool_choice="required", max_tokens=60
    )
    assert offered.usage.prompt_tokens > plain.usage.prompt_tokens + 30  # the schema is in the prompt


def test_required_and_named_calls_parse_and_validate(templated):
    _, client, model = templated
    named = {"type": "function", "function": {"name": "plan_trip"}}
    for seed in range(6):
        choice = client.chat.completions.create(
            model=model,
            messages=QUESTION,
            tools=[PLAN, OTHER],
            tool_choice="required" if seed % 2 else named,
            parallel_tool_calls=False,
            temperature=1.0,
            seed=seed,
            max_tokens=400,  # a random model spells the markup a character at a time, spaces between
        ).choices[0]
        assert choice.finish_reason == "tool_calls" and choice.message.content is None
        (call,) = choice.message.tool_calls
        schema = {"plan_trip": PLAN, "cancel": OTHER}[call.function.name]["function"]["parameters"]
        jsonschema.validate(json.loads(call.function.arguments), schema)


def test_streamed_calls_equal_whole_ones_and_history_renders(templated):
    _, client, model = templated
    body = dict(model=model, messages=QUESTION, tools=[PLAN, OTHER], tool_choice="required", seed=3)
    body.update(temperature=1.0, max_tokens=400)
    reply = client.chat.completions.create(**body)
    whole = reply.choices[0]
    _, calls, finish = streamed_calls(client.chat.completions.create(**body, stream=True))
    assert finish == whole.finish_reason
    assert [(c["name"], c["arguments"]) for c in calls] == [
        (c.function.name, c.function.arguments) for c in whole.message.tool_calls
    ]
    history = [
        *QUESTION,
        {"role": "assistant", "tool_calls": [c.model_dump() for c in whole.message.tool_calls]},
        *({"role": "tool", "tool_call_id": c.id, "content": "booked"} for c in whole.message.tool_calls),
    ]
    answer = client.chat.completions.create(model=model, messages=history, tools=[PLAN], max_tokens=3)
    assert answer.usage.prompt_tokens > reply.usage.prompt_tokens
