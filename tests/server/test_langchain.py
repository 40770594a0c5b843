"""LangChain's ChatOpenAI (langchain-openai) against a live server: text, streaming, tool calls (forced:
the 135M model seldom calls on its own), a call/result/answer round trip, and structured output."""

from __future__ import annotations

import functools
import json
import operator
from types import SimpleNamespace

import pydantic
import pytest

from tests.server.test_tools import TOOLS, WEATHER, assert_valid_calls

langchain_openai = pytest.importorskip("langchain_openai")
lc_messages = pytest.importorskip("langchain_core.messages")

QUESTION = "What is the weather in Paris?"


def chat(server, model, **kwargs) -> langchain_openai.ChatOpenAI:
    kwargs = {"temperature": 0, "seed": 0, "max_tokens": 120, **kwargs}
    return langchain_openai.ChatOpenAI(
        base_url=f"{server.base_url}/v1", api_key="unused", model=model, max_retries=0, timeout=120, **kwargs
    )


def assert_valid_lc_calls(message) -> None:
    """The tests' check of an openai message's calls, on LangChain's parsed calls."""
    assert not message.invalid_tool_calls
    calls = [
        SimpleNamespace(
            type="function",
            id=call["id"],
            function=SimpleNamespace(name=call["name"], arguments=json.dumps(call["args"])),
        )
        for call in message.tool_calls
    ]
    assert_valid_calls(SimpleNamespace(tool_calls=calls))


def test_invoke_and_stream_give_the_same_text(server, model):
    llm = chat(server, model, max_tokens=40, stream_usage=True)
    whole = llm.invoke("Say hello.")
    assert isinstance(whole, lc_messages.AIMessage)
    assert isinstance(whole.content, str) and whole.content and not whole.tool_calls
    assert whole.response_metadata["finish_reason"] in ("stop", "length")
    chunks = list(llm.stream("Say hello."))
    assert all(isinstance(c, lc_messages.AIMessageChunk) for c in chunks)
    assert sum(1 for c in chunks if c.content) > 1  # streamed, not one block
    text = "".join(c.content for c in chunks)
    assert text and text == whole.content
    summed = functools.reduce(operator.add, chunks)
    assert summed.content == text
    assert summed.response_metadata["finish_reason"] == whole.response_metadata["finish_reason"]
    # stream_options.include_usage: the usage arrives in the stream and matches the whole reply's
    assert summed.usage_metadata["output_tokens"] == whole.usage_metadata["output_tokens"] > 0
    assert summed.usage_metadata["input_tokens"] == whole.usage_metadata["input_tokens"] > 0


@pytest.mark.parametrize("tool_choice", ["get_weather", "required"])
def test_bound_tools_give_one_valid_call_streamed_or_whole(server, model, tool_choice):
    bound = chat(server, model).bind_tools(TOOLS, tool_choice=tool_choice, parallel_tool_calls=False)
    whole = bound.invoke(QUESTION)
    assert isinstance(whole, lc_messages.AIMessage)
    assert whole.response_metadata["finish_reason"] == "tool_calls"
    assert not whole.content
    (call,) = whole.tool_calls
    if tool_choice == "get_weather":
        assert call["name"] == "get_weather"
    assert call["type"] == "tool_call" and isinstance(call["args"], dict)
    assert_valid_lc_calls(whole)

    chunks = list(bound.stream(QUESTION))
    assert sum(1 for c in chunks if c.tool_call_chunks) > 1  # the arguments arrive in pieces
    summed = functools.reduce(operator.add, chunks)
    assert summed.response_metadata["finish_reason"] == "tool_calls"
    assert not summed.content
    (streamed,) = summed.tool_calls
    assert (streamed["name"], streamed["args"]) == (call["name"], call["args"])
    assert_valid_lc_calls(summed)


@pytest.mark.parametrize("answer_with_tools", ["none", "no tools"])
def test_a_call_its_result_and_a_text_answer(server, model, answer_with_tools):
    llm = chat(server, model)
    question = lc_messages.HumanMessage(QUESTION)
    first = llm.bind_tools([WEATHER], tool_choice="get_weather", parallel_tool_calls=False).invoke([question])
    (call,) = first.tool_calls
    assert call["name"] == "get_weather"
    history = [
        question,
        first,
        lc_messages.ToolMessage(content="Sunny and 21 degrees.", tool_call_id=call["id"]),
    ]
    answerer = llm.bind_tools(TOOLS, tool_choice="none") if answer_with_tools == "none" else llm
    answer = answerer.invoke(history)
    assert isinstance(answer, lc_messages.AIMessage)
    assert isinstance(answer.content, str) and answer.content.strip()
    assert not answer.tool_calls and not answer.invalid_tool_calls
    assert "<tool_call>" not in answer.content
    assert answer.response_metadata["finish_reason"] in ("stop", "length")


class City(pydantic.BaseModel):
    name: str = pydantic.Field(min_length=1, max_length=30)
    country: str = pydantic.Field(min_length=1, max_length=30)


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_structured_output_gives_a_pydantic_instance(server, model, method):
    structured = chat(server, model).with_structured_output(City, method=method, include_raw=True)
    result = structured.invoke("Name a city and its country.")
    assert result["parsing_error"] is None
    assert isinstance(result["parsed"], City)
    raw = result["raw"]
    if method == "json_schema":  # response_format json_schema: the JSON is the reply's text
        assert not raw.tool_calls
        assert City.model_validate_json(raw.content) == result["parsed"]
    else:  # a call forced to the tool named after the model
        (call,) = raw.tool_calls
        assert call["name"] == "City" and City.model_validate(call["args"]) == result["parsed"]
        assert raw.response_metadata["finish_reason"] == "tool_calls"
