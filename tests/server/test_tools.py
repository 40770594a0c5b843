"""Tool calling against a live server (the embedded SmolLM2, whose template knows no tools: the generic
prompt), with the official client and the OpenAI Agents SDK."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import jsonschema
import openai
import pytest

from tests.server.helpers import assert_error

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 40},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
SEARCH = {
    "type": "function",
    "function": {
        "name": "search",
        "description": "Search the web.",
        "parameters": {
            "type": "object",
            "properties": {
                "query": {"type": "string", "maxLength": 60},
                "limit": {"type": "integer", "minimum": 1, "maximum": 5},
            },
            "required": ["query", "limit"],
        },
    },
}
# Values a tool may be forced to take (an enum): the parser must hand them over intact
HARD_VALUE = 'a}{b "quoted" </tool_call> {"name": "x"} é ✓ \\ end'
ECHO = {
    "type": "function",
    "function": {
        "name": "echo",
        "parameters": {
            "type": "object",
            "properties": {"text": {"enum": [HARD_VALUE]}},
            "required": ["text"],
        },
    },
}
TOOLS = [WEATHER, SEARCH]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in (*TOOLS, ECHO)}
QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]


def assert_valid_calls(message) -> None:
    assert message.tool_calls
    for call in message.tool_calls:
        assert call.type == "function" and call.id.startswith("call_")
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


def sampled_replies(client, model, choice, count: int) -> list[openai.types.chat.ChatCompletion]:
    """`count` replies to the weather question under `choice`, sampled (temperature 1) with seeds 0, 1, ..."""

    def ask(seed: int) -> openai.types.chat.ChatCompletion:
        return client.chat.completions.create(
            model=model,
            messages=QUESTION,
            tools=TOOLS,
            tool_choice=choice,
            parallel_tool_calls=False,
            temperature=1.0,
            seed=seed,
            max_tokens=120,
        )

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(ask, range(count)))


def test_required_and_named_choices_give_valid_calls_every_time(client, model):
    named = {"type": "function", "function": {"name": "search"}}
    replies = sampled_replies(client, model, "required", 20) + sampled_replies(client, model, named, 20)
    for reply in replies:
        choice = reply.choices[0]
        assert choice.finish_reason == "tool_calls"
        assert choice.message.content is None
        assert len(choice.message.tool_calls) == 1
        assert_valid_calls(choice.message)
    assert {r.choices[0].message.tool_calls[0].function.name for r in replies[20:]} == {"search"}


@pytest.mark.parametrize("stream", [False, True])
def test_a_reply_cut_off_inside_its_calls_puts_no_markup_in_content(client, model, stream):
    """max_tokens ending a forced call before its name (and, in a second call, before its name too): no
    content or markup in it, a call named keeps what it wrote, finish_reason length."""
    for max_tokens in (1, 3, 5, 40):
        reply = client.chat.completions.create(
            model=model,
            messages=QUESTION,
            tools=TOOLS,
            tool_choice="required",
            temperature=0,
            max_tokens=max_tokens,
            stream=stream,
        )
        if stream:
            content, names, finish = "", [], None
            for chunk in reply:
                if chunk.choices:
                    delta = chunk.choices[0].delta
                    content += delta.content or ""
                    names += [c.function.name for c in delta.tool_calls or () if c.function.name]
                    finish = chunk.choices[0].finish_reason or finish
        else:
            message = reply.choices[0].message
            assert message.content is None  # a reply of calls only has no content, even cut off
            content, finish = "", reply.choices[0].finish_reason
            names = [c.function.name for c in message.tool_calls or ()]
        assert (content, finish) == ("", "length"), max_tokens
        assert set(names) <= {"get_weather", "search"}
    assert names  # at 40 tokens a call was named


@pytest.mark.parametrize("stream", [False, True])
def test_stop_strings_never_cut_a_call(client, model, stream):
    """Stop strings apply to the content, as at OpenAI: never within a call's markup or arguments
    (agent frameworks send stops such as a newline)."""
    stop = ["\n", "<", "Paris", '"']
    for choice in ("required", {"type": "function", "function": {"name": "get_weather"}}, "auto"):
        body = dict(model=model, messages=QUESTION, tools=TOOLS, tool_choice=choice, temperature=0)
        body.update(max_tokens=80, stop=stop, parallel_tool_calls=False)
        if stream:
            chunks = list(client.chat.completions.create(**body, stream=True))
            content, calls, finish = streamed_calls(chunks)
            pieces = [c for chunk in chunks for ch in chunk.choices for c in ch.delta.tool_calls or ()]
            assert not calls or len(pieces) > 3, choice  # the arguments stream: not held to the end
        else:
            reply = client.chat.completions.create(**body).choices[0]
            content, finish = reply.message.content or "", reply.finish_reason
            calls = [
                {"name": c.function.name, "arguments": c.function.arguments}
                for c in reply.message.tool_calls or ()
            ]
        assert not any(s in content for s in stop), choice
        if choice != "auto" or calls:
            assert finish == "tool_calls" and len(calls) == 1, choice
            jsonschema.validate(json.loads(calls[0]["arguments"]), SCHEMAS[calls[0]["name"]])


def test_none_gives_text_and_auto_may_answer_in_text(client, model):
    reply = client.chat.completions.create(
        model=model, messages=QUESTION, tools=TOOLS, tool_choice="none", max_tokens=20
    )
    assert reply.choices[0].message.content and not reply.choices[0].message.tool_calls
    assert "<tool_call>" not in reply.choices[0].message.content
    reply = client.chat.completions.create(model=model, messages=QUESTION, tools=TOOLS, max_tokens=60)
    message = reply.choices[0].message
    assert message.content or message.tool_calls
    if message.tool_calls:
        assert_valid_calls(message)


def streamed_calls(stream) -> tuple[str, list[dict], str]:
    """Content, calls and finish reason of a streamed reply, reassembled as a client does."""
    content, calls, finish = "", [], None
    for chunk in stream:
        for choice in chunk.choices:
            content += choice.delta.content or ""
            for delta in choice.delta.tool_calls or []:
                if delta.id is not None:  # a call's first delta names it
                    assert delta.index == len(calls) and delta.type == "function" and delta.function.name
                    calls.append({"id": delta.id, "name": delta.function.name, "arguments": ""})
                calls[delta.index]["arguments"] += delta.function.arguments or ""
            finish = choice.finish_reason or finish
    return content, calls, finish


@pytest.mark.parametrize("parallel", [True, False])
def test_the_streamed_call_equals_the_whole_one(client, model, parallel):
    body = dict(model=model, messages=QUESTION, tools=TOOLS, tool_choice="required", max_tokens=150, seed=7)
    body.update(parallel_tool_calls=parallel, temperature=0.8)
    whole = client.chat.completions.create(**body).choices[0]
    content, calls, finish = streamed_calls(client.chat.completions.create(**body, stream=True))
    assert finish == whole.finish_reason
    assert (content or None) == whole.message.content
    assert [(c["name"], c["arguments"]) for c in calls] == [
        (c.function.name, c.function.arguments) for c in whole.message.tool_calls
    ]
    with client.chat.completions.create(**body, stream=True) as stream:  # a reply of calls only...
        first = next(iter(stream)).choices[0].delta
    assert first.role == "assistant" and first.content is None  # ...opens with no content, as at OpenAI


def test_arguments_with_braces_quotes_unicode_and_markup_survive(client, model):
    body = dict(
        model=model, messages=QUESTION, tools=[ECHO], tool_choice="required", parallel_tool_calls=False
    )
    whole = client.chat.completions.create(**body, max_tokens=100).choices[0].message
    assert json.loads(whole.tool_calls[0].function.arguments) == {"text": HARD_VALUE}
    _, calls, _ = streamed_calls(client.chat.completions.create(**body, max_tokens=100, stream=True))
    assert json.loads(calls[0]["arguments"]) == {"text": HARD_VALUE}


def test_a_function_named_like_a_mode_is_called_by_name(client, model):
    none = {
        "type": "function",
        "function": {"name": "none", "parameters": {"type": "object", "properties": {}}},
    }
    reply = client.chat.completions.create(
        model=model,
        messages=QUESTION,
        tools=[WEATHER, none],
        tool_choice={"type": "function", "function": {"name": "none"}},
        max_tokens=60,
    )
    assert [c.function.name for c in reply.choices[0].message.tool_calls] == ["none"]


@pytest.mark.parametrize("parameters", [None, {}])
def test_a_function_without_parameters_is_called_with_none(client, model, parameters):
    now = {"type": "function", "function": {"name": "now", "description": "The time now, with the date."}}
    if parameters is not None:
        now["function"]["parameters"] = parameters
    for seed in range(4):
        reply = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "What time and date is it in Tokyo?"}],
            tools=[now],
            tool_choice="required",
            parallel_tool_calls=False,
            temperature=1.0,
            seed=seed,
            max_tokens=40,
        )
        assert reply.choices[0].finish_reason == "tool_calls"
        calls = reply.choices[0].message.tool_calls
        assert calls and all(c.function.name == "now" and c.function.arguments == "{}" for c in calls)


def test_a_full_round_trip_call_result_answer(client, model):
    first = (
        client.chat.completions.create(
            model=model,
            messages=QUESTION,
            tools=TOOLS,
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
            max_tokens=100,
        )
        .choices[0]
        .message
    )
    call = first.tool_calls[0]
    history = [
        *QUESTION,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "Sunny and 21 degrees."},
    ]
    answer = client.chat.completions.create(
        model=model, messages=history, tools=TOOLS, tool_choice="none", max_tokens=40
    )
    assert answer.choices[0].message.content
    assert answer.usage.prompt_tokens > 0


def test_a_json_response_format_beside_tools_gives_calls_or_that_json(client, model):
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string", "maxLength": 80}},
        "required": ["answer"],
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}
    for seed in range(4):
        choice = client.chat.completions.create(
            model=model,
            messages=QUESTION,
            tools=TOOLS,
            parallel_tool_calls=False,
            response_format=fmt,
            temperature=1.0,
            seed=seed,
            max_tokens=150,
        ).choices[0]
        message = choice.message
        assert choice.finish_reason == ("tool_calls" if message.tool_calls else "stop")
        if message.tool_calls:
            assert_valid_calls(message)
        else:
            jsonschema.validate(json.loads(message.content), schema)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tool_choice": "none"}, "tool_choice"),
        ({"parallel_tool_calls": False}, "parallel_tool_calls"),
        ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools"),
        ({"tools": [WEATHER, WEATHER]}, "tools"),
        ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools"),
        (
            {
                "tools": [
                    {
                        "type": "function",
                        "function": {
                            "name": "f",
                            "parameters": {"type": "object", "properties": {"a": {"type": "nonsense"}}},
                        },
                    }
                ],
                "tool_choice": "required",
            },
            "tools",
        ),
        (  # a keyword the grammar would let a call break
            {
                "tools": [
                    {
                        "type": "function",
                        "function": {
                            "name": "f",
                            "parameters": {
                                "type": "object",
                                "properties": {"ids": {"type": "array", "uniqueItems": True}},
                            },
                            "strict": True,
                        },
                    }
                ]
            },
            "tools",
        ),
        (  # a strict JSON output beside the tools, which the grammar would let break
            {
                "tools": TOOLS,
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {
                        "name": "tags",
                        "schema": {"type": "array", "uniqueItems": True},
                        "strict": True,
                    },
                },
            },
            "response_format",
        ),
        ({"tools": TOOLS, "structured_outputs": {"regex": "a+"}}, "structured_outputs"),
        (  # allowed tools must be among the tools
            {
                "tools": TOOLS,
                "tool_choice": {
                    "type": "allowed_tools",
                    "allowed_tools": {
                        "mode": "auto",
                        "tools": [{"type": "function", "function": {"name": "x"}}],
                    },
                },
            },
            "tool_choice",
        ),
        (
            {
                "tools": TOOLS,
                "tool_choice": {"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": []}},
            },
            "tool_choice",
        ),
        ({"messages": [*QUESTION, {"role": "tool", "content": "no id"}]}, "messages"),
        ({"messages": [*QUESTION, {"role": "tool", "content": "20C", "tool_call_id": "nope"}]}, "messages"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_bad_tools_are_a_400_naming_the_field(http, model, body, param, stream):
    body = {"model": model, "messages": QUESTION, "max_tokens": 5, "stream": stream, **body}
    error = assert_error(http.post("/v1/chat/completions", json=body), 400)
    assert error["param"].split(".")[0].split("[")[0] == param


@pytest.mark.parametrize("mode", ["required", "auto"])
def test_allowed_tools_keep_every_tool_in_the_prompt_and_let_only_those_be_called(client, http, model, mode):
    allowed = {
        "type": "allowed_tools",
        "allowed_tools": {"mode": mode, "tools": [{"type": "function", "function": {"name": "search"}}]},
    }
    counted = http.post("/tokenize", json={"messages": QUESTION, "tools": TOOLS})
    assert counted.status_code == 200, counted.text
    count = counted.json()["count"]

    replies = sampled_replies(client, model, allowed, 8)
    for reply in replies:
        message = reply.choices[0].message
        if mode == "required":
            assert reply.choices[0].finish_reason == "tool_calls" and message.content is None
        # never get_weather, which the question asks for (under auto, this model mostly answers in text)
        for call in message.tool_calls or []:
            assert call.function.name == "search"
            jsonschema.validate(json.loads(call.function.arguments), SCHEMAS["search"])
        # every tool in the prompt, which under auto is the prompt of tool_choice auto (its cached prefix)
        assert reply.usage.prompt_tokens == count if mode == "auto" else reply.usage.prompt_tokens > count


# ---- the Responses API -----------------------------------------------------------------------------
RESPONSES_TOOLS = [{"type": "function", **t["function"]} for t in TOOLS]


def test_responses_function_calls_and_their_outputs(client, model):
    first = client.responses.create(
        model=model,
        input="What is the weather in Paris?",
        tools=RESPONSES_TOOLS,
        tool_choice="required",
        parallel_tool_calls=False,
        max_output_tokens=120,
    )
    assert first.status == "completed"
    (call,) = first.output
    assert call.type == "function_call" and call.call_id.startswith("call_") and call.status == "completed"
    jsonschema.validate(json.loads(call.arguments), SCHEMAS[call.name])
    assert first.tools[0].name == "get_weather" and first.tool_choice == "required"
    result = {"type": "function_call_output", "call_id": call.call_id, "output": "Sunny and 21 degrees."}
    # the call and its result sent back, or the stored response continued: the same conversation
    sent_back = client.responses.create(
        model=model,
        input=[
            {"role": "user", "content": "What is the weather in Paris?"},
            call.model_dump(exclude_none=True),
            result,
        ],
        tools=RESPONSES_TOOLS,
        tool_choice="none",
        max_output_tokens=30,
    )
    continued = client.responses.create(
        model=model,
        previous_response_id=first.id,
        input=[result],
        tools=RESPONSES_TOOLS,
        tool_choice="none",
        max_output_tokens=30,
    )
    assert sent_back.output_text and sent_back.output_text == continued.output_text
    assert sent_back.usage.input_tokens == continued.usage.input_tokens
    with pytest.raises(openai.BadRequestError) as e:  # a result of a call neither input nor chain made
        client.responses.create(
            model=model,
            previous_response_id=first.id,
            input=[{**result, "call_id": "call_nope"}],
            tools=RESPONSES_TOOLS,
            max_output_tokens=30,
        )
    assert e.value.body["param"] == "input" and "call_nope" in e.value.body["message"]


def test_responses_allowed_tools(client, model):
    choice = {"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "search"}]}
    r = client.responses.create(
        model=model,
        input="What is the weather in Paris?",
        tools=RESPONSES_TOOLS,
        tool_choice=choice,
        parallel_tool_calls=False,
        max_output_tokens=120,
    )
    assert r.output and all(item.type == "function_call" and item.name == "search" for item in r.output)
    assert r.tool_choice.type == "allowed_tools" and r.tool_choice.mode == "required"


def test_responses_stream_function_call_events(client, model):
    body = dict(
        model=model,
        input="What is the weather in Paris?",
        tools=RESPONSES_TOOLS,
        tool_choice="required",
        max_output_tokens=120,
        parallel_tool_calls=False,
    )
    with client.responses.stream(**body) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    (call,) = final.output
    deltas = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert deltas == done.arguments == call.arguments
    assert kinds.index("response.output_item.added") < kinds.index("response.function_call_arguments.delta")
    assert kinds[-2:] == ["response.output_item.done", "response.completed"]
    assert "response.output_text.delta" not in kinds
    added = next(e for e in events if e.type == "response.output_item.added")
    assert added.item.type == "function_call" and added.item.name == call.name and added.item.id == call.id


def test_a_responses_function_without_strict_is_strict_as_at_openai(client, model):
    """Left out, `strict` is true in the Responses API where the schema can be made strict: every property
    required, no other keys, though the schema made `unit` optional and said nothing of others; `strict:
    false` keeps the schema as is."""
    loose = {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 40},
            "unit": {"enum": ["celsius", "fahrenheit"]},
        },
        "required": ["city"],
    }
    closed = loose | {"required": ["city", "unit"], "additionalProperties": False}
    tool = {"type": "function", "name": "get_weather", "parameters": loose}
    asked = dict(input="What is the weather in Paris?", tool_choice="required", parallel_tool_calls=False)
    for _ in range(3):
        r = client.responses.create(model=model, tools=[tool], max_output_tokens=60, temperature=1.0, **asked)
        (call,) = r.output
        jsonschema.validate(json.loads(call.arguments), closed)
    assert r.tools[0].strict is True and r.tools[0].parameters == closed
    r = client.responses.create(model=model, tools=[tool | {"strict": False}], max_output_tokens=60, **asked)
    assert r.tools[0].strict is False and r.tools[0].parameters == loose
    # a schema the grammar cannot wholly enforce once normalized stays as written, not strict, as at
    # OpenAI; asked to be strict, it is refused
    unenforceable = {**tool, "parameters": loose | {"not": {"required": ["unit"]}}}
    r = client.responses.create(model=model, tools=[unenforceable], max_output_tokens=60, **asked)
    assert r.status == "completed" and r.tools[0].strict is False
    assert r.tools[0].parameters == unenforceable["parameters"]
    with pytest.raises(openai.BadRequestError, match="`not`"):
        client.responses.create(model=model, tools=[unenforceable | {"strict": True}], **asked)


def test_responses_refuse_tools_we_do_not_run(client, model):
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model=model, input="hi", tools=[{"type": "web_search"}])
    assert e.value.body["param"].startswith("tools")
    assert "tools of type 'web_search' are not served here" in e.value.body["message"]


# ---- the OpenAI Agents SDK --------------------------------------------------------------------------
@pytest.mark.parametrize("api", ["responses", "chat_completions"])
def test_an_agent_calls_its_tool_and_answers(server, model, api):
    agents = pytest.importorskip("agents")
    agents.set_tracing_disabled(True)
    cities: list[str] = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """The current weather in a city."""
        cities.append(city)
        return f"It is sunny and 21 degrees in {city}."

    async def run() -> agents.RunResult:
        client = openai.AsyncOpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0)
        kind = agents.OpenAIResponsesModel if api == "responses" else agents.OpenAIChatCompletionsModel
        agent = agents.Agent(
            name="weather",
            instructions="Answer with the help of your tools.",
            tools=[get_weather],
            model=kind(model, client),
            # a 135M model seldom calls on its own: required for the first turn (the SDK then
            # resets it to auto); one call per turn, as it repeats calls otherwise
            model_settings=agents.ModelSettings(
                tool_choice="required", parallel_tool_calls=False, max_tokens=120
            ),
        )
        return await agents.Runner.run(agent, "What is the weather in Paris?", max_turns=4)

    result = asyncio.run(run())
    assert cities and all(isinstance(c, str) and c for c in cities)
    kinds = [item.type for item in result.new_items]
    assert kinds[:2] == ["tool_call_item", "tool_call_output_item"] and kinds[-1] == "message_output_item"
    assert isinstance(result.final_output, str) and result.final_output


def test_parse_failures_are_counted_in_engine_stats(http):
    stats = httpx.get(f"{http.base_url}/v1/engine/stats").json()
    assert stats["num_tool_call_parse_failures"] == 0
