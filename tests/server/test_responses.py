"""The Responses API through the official openai client: input shapes, instructions, streaming events,
stored responses (GET, DELETE, cancel, previous_response_id), limits, errors, and cached tokens."""

from __future__ import annotations

import uuid

import openai
import pytest
from openai.types.responses import Response, ResponseItem
from pydantic import TypeAdapter

from tests.server.helpers import engine_idle, wait_until

LOGPROBS = "message.output_text.logprobs"

QUESTION = "What is the capital of France?"  # SmolLM2 answers in 8 tokens, then stops
SEA = "Write one sentence about the sea."

EVENTS_BEFORE_TEXT = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
]
EVENTS_AFTER_TEXT = ["response.output_text.done", "response.content_part.done", "response.output_item.done"]


def respond(client, model, **kwargs):
    kwargs.setdefault("input", QUESTION)
    kwargs.setdefault("max_output_tokens", 24)
    kwargs.setdefault("temperature", 0)
    return client.responses.create(model=model, **kwargs)


def test_string_input_completes(client, model):
    # max_tool_calls bounds built-in tools' calls, which this server has none of
    echoed = {
        "prompt_cache_key": "k1",
        "safety_identifier": "s1",
        "service_tier": "auto",
        "max_tool_calls": 0,
    }
    r = respond(client, model, metadata={"k": "v"}, user="tester", **echoed)
    assert r.id.startswith("resp_") and r.object == "response" and r.model == model and r.created_at > 0
    assert r.status == "completed" and r.incomplete_details is None and r.completed_at >= r.created_at
    (message,) = r.output
    assert message.type == "message" and message.role == "assistant" and message.status == "completed"
    assert message.id.startswith("msg_") and [p.type for p in message.content] == ["output_text"]
    assert "Paris" in r.output_text
    assert r.metadata == {"k": "v"} and r.user == "tester" and r.store is True and r.temperature == 0
    echoes = (r.prompt_cache_key, r.safety_identifier, r.service_tier, r.top_logprobs, r.max_tool_calls)
    assert echoes == ("k1", "s1", "default", 0, 0)
    u = r.usage
    assert u.output_tokens == 8 and u.total_tokens == u.input_tokens + 8
    assert u.output_tokens_details.reasoning_tokens == 0 and u.input_tokens_details.cached_tokens >= 0
    assert u.model_extra["performance"]["decode_iterations"] == 7
    assert (
        Response.model_validate(r.model_dump()) == r
    )  # whole by the SDK's type: its required fields all there


def test_list_of_message_items_equals_string_input(client, model):
    by_string = respond(client, model).output_text
    parts = [
        {"type": "input_text", "text": "What is the capital "},
        {"type": "input_text", "text": "of France?"},
    ]
    by_parts = respond(client, model, input=[{"type": "message", "role": "user", "content": parts}])
    by_message = respond(client, model, input=[{"role": "user", "content": QUESTION}])
    assert by_parts.output_text == by_message.output_text == by_string


def test_max_output_tokens_gives_incomplete(client, model):
    r = respond(client, model, input=SEA, max_output_tokens=5)
    assert r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens"
    assert r.output[0].status == "incomplete" and r.usage.output_tokens == 5 and r.completed_at is None


def test_instructions_take_effect(client, model):
    pirate = "You are a pirate. Talk like a pirate."
    plain = respond(client, model, input=SEA, max_output_tokens=10).output_text
    instructed = respond(client, model, input=SEA, instructions=pirate, max_output_tokens=10)
    as_system = respond(
        client,
        model,
        input=[{"role": "developer", "content": pirate}, {"role": "user", "content": SEA}],
        max_output_tokens=10,
    )
    assert instructed.instructions == pirate
    assert instructed.output_text == as_system.output_text != plain


def test_streamed_events_in_order_and_deltas_equal_whole_text(client, model):
    whole = respond(client, model, input=SEA, max_output_tokens=10)
    events = list(respond(client, model, input=SEA, max_output_tokens=10, stream=True))
    types = [e.type for e in events]
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert types == [
        *EVENTS_BEFORE_TEXT,
        *["response.output_text.delta"] * 10,
        *EVENTS_AFTER_TEXT,
        "response.incomplete",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert "".join(deltas) == whole.output_text == events[-4].text
    final = events[-1].response
    assert final.status == "incomplete" and final.output_text == whole.output_text
    assert final.usage.output_tokens == 10 and events[0].response.id == final.id
    assert events[0].response.status == "in_progress" and events[2].item.content == []


def test_sdk_stream_helper(client, model):
    whole = respond(client, model).output_text
    with client.responses.stream(model=model, input=QUESTION, max_output_tokens=24, temperature=0) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert final.status == "completed" and final.output_text == "".join(deltas) == whole


def test_previous_response_id_continues_the_conversation(client, model):
    name = "Zorblax"
    first = respond(client, model, input=f"My name is {name}. Say hello to me.", max_output_tokens=8)
    second = respond(
        client, model, input="What is my name?", previous_response_id=first.id, max_output_tokens=8
    )
    explicit = respond(
        client,
        model,
        input=[
            {"role": "user", "content": f"My name is {name}. Say hello to me."},
            {"role": "assistant", "content": [{"type": "output_text", "text": first.output_text}]},
            {"role": "user", "content": "What is my name?"},
        ],
        max_output_tokens=8,
    )
    assert second.previous_response_id == first.id
    assert name in second.output_text and second.output_text == explicit.output_text
    assert second.usage.input_tokens == explicit.usage.input_tokens > first.usage.total_tokens
    assert second.usage.input_tokens_details.cached_tokens >= first.usage.input_tokens // 16 * 16 > 0


def test_get_and_delete_stored_response(client, model):
    r = respond(client, model, max_output_tokens=3)
    got = client.responses.retrieve(r.id)
    assert got.id == r.id and got.status == r.status and got.output_text == r.output_text
    assert got.usage.output_tokens == 3
    for asked in ({"stream": True}, {"include": [LOGPROBS]}):  # what this stored response cannot give
        with pytest.raises(openai.BadRequestError) as refused:
            client.responses.retrieve(r.id, **asked)
        assert refused.value.body["param"] == next(iter(asked))
    with_logprobs = respond(client, model, max_output_tokens=3, include=[LOGPROBS])
    again = client.responses.retrieve(with_logprobs.id, include=[LOGPROBS])  # as it was made
    assert len(again.output[0].content[0].logprobs) == 3
    plain = client.responses.retrieve(with_logprobs.id)  # include adds them, as at OpenAI
    assert plain.output[0].content[0].logprobs == [] and plain.output_text == with_logprobs.output_text
    with pytest.raises(openai.NotFoundError):  # an unknown id is not found, whatever is asked of it
        client.responses.retrieve("resp_nothing", stream=True)
    client.responses.delete(r.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(r.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(r.id)


def test_input_items_list_the_response_s_own_input_as_the_client_pages_them(client, model, http):
    first = respond(client, model, max_output_tokens=2)  # a string input: one user message
    (item,) = client.responses.input_items.list(first.id).data
    assert item.type == "message" and item.role == "user" and item.content[0].type == "input_text"
    calls = [
        {"role": "user", "content": "What is 2 + 2?"},
        {"type": "function_call", "call_id": "c1", "name": "add", "arguments": '{"a": 2, "b": 2}'},
        {"type": "function_call_output", "call_id": "c1", "output": "4"},
        {"role": "assistant", "content": "It is 4."},
        {"role": "user", "content": "And 3 + 3?"},
    ]
    r = client.responses.create(model=model, input=calls, previous_response_id=first.id, max_output_tokens=2)
    listed = client.responses.input_items.list(r.id, order="asc")  # its own input, not the earlier turn's
    assert [i.type for i in listed.data] == [
        "message",
        "function_call",
        "function_call_output",
        "message",
        "message",
    ]
    assert listed.data[1].call_id == "c1" and listed.data[2].output == "4"
    assert listed.data[3].content[0].type == "output_text" and listed.data[4].content[0].text == "And 3 + 3?"
    raw = http.get(f"/v1/responses/{r.id}/input_items", params={"order": "asc"}).json()["data"]
    for item in raw:  # whole by the SDK's own types (an output text's annotations among them)
        TypeAdapter(ResponseItem).validate_python(item)
    with pytest.raises(openai.BadRequestError):
        client.responses.input_items.list(r.id, include=[LOGPROBS])
    newest_first = [i.id for i in client.responses.input_items.list(r.id).data]
    assert newest_first == [i.id for i in listed.data][::-1]
    pages = client.responses.input_items.list(r.id, limit=2, order="asc")  # the client follows the cursor
    assert pages.has_more and [i.id for i in pages] == [i.id for i in listed.data]
    refused = http.get(f"/v1/responses/{r.id}/input_items", params={"limit": 0})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "limit"
    with pytest.raises(openai.NotFoundError):
        client.responses.input_items.list("resp_nothing")


def test_input_items_list_each_role_s_parts_as_openai_does(client, model, http):
    """An assistant's parts are output text, every other role's input text, whatever type they came as."""
    given = [
        {"role": "user", "content": [{"type": "output_text", "text": "Hi."}]},
        {"role": "assistant", "content": [{"type": "input_text", "text": "Hello."}]},
        {"role": "user", "content": "Bye."},
    ]
    r = client.responses.create(model=model, input=given, max_output_tokens=2)
    listed = http.get(f"/v1/responses/{r.id}/input_items", params={"order": "asc"}).json()["data"]
    assert [item["content"][0]["type"] for item in listed] == ["input_text", "output_text", "input_text"]
    for item in listed:
        TypeAdapter(ResponseItem).validate_python(item)


def test_store_false_is_not_kept(client, model):
    r = respond(client, model, max_output_tokens=2, store=False)
    assert r.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(r.id)
    with pytest.raises(openai.NotFoundError):
        respond(client, model, max_output_tokens=2, previous_response_id=r.id)


def test_store_null_is_openai_s_default_kept(client, model, http):
    r = http.post(
        "/v1/responses", json={"model": model, "input": QUESTION, "max_output_tokens": 2, "store": None}
    )
    assert r.status_code == 200 and r.json()["store"] is True
    assert client.responses.retrieve(r.json()["id"]).id == r.json()["id"]


def test_unknown_id_is_a_404_in_openai_shape(client, model, http):
    r = http.get("/v1/responses/resp_unknown")
    assert r.status_code == 404
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and "resp_unknown" in error["message"]
    assert http.post("/v1/responses/resp_unknown/cancel").status_code == 404
    with pytest.raises(openai.NotFoundError) as e:
        respond(client, model, previous_response_id="resp_unknown")
    assert e.value.body["param"] == "previous_response_id"


def test_cancel_a_running_stream_from_another_connection(client, model, http):
    stream = respond(
        client, model, input="Tell me a long story about a dragon.", max_output_tokens=300, stream=True
    )
    with stream:
        events = iter(stream)
        response_id = next(events).response.id
        assert next(e for e in events if e.type == "response.output_text.delta").delta
        cancelled = client.responses.cancel(response_id)
        assert cancelled.status == "cancelled"
        rest = list(events)
    assert [e.type for e in rest[-4:]] == [*EVENTS_AFTER_TEXT, "response.incomplete"]
    assert rest[-1].response.status == "cancelled" and rest[-1].response.usage.output_tokens < 100
    wait_until(lambda: engine_idle(http), timeout=5)
    stored = client.responses.retrieve(response_id)
    assert stored.status == "cancelled" and stored.output_text == rest[-1].response.output_text
    assert client.responses.cancel(response_id).status == "cancelled"  # cancelling twice is harmless


def test_cancel_a_finished_response_is_refused(client, model):
    r = respond(client, model, max_output_tokens=2)
    with pytest.raises(openai.BadRequestError, match="Cannot cancel a response that has finished"):
        client.responses.cancel(r.id)


def test_disconnect_aborts_and_marks_the_stored_response(client, model, http):
    with respond(client, model, input="Tell me a long story.", max_output_tokens=300, stream=True) as stream:
        events = iter(stream)
        response_id = next(events).response.id
        next(e for e in events if e.type == "response.output_text.delta")
    wait_until(lambda: engine_idle(http), timeout=5)
    assert client.responses.retrieve(response_id).status == "cancelled"


def test_logprobs_of_the_output_text_where_included(client, model):
    reply = respond(client, model, include=[LOGPROBS], top_logprobs=2)
    (text,) = reply.output[0].content
    assert text.logprobs and all(len(t.top_logprobs) == 2 and t.logprob <= 0 for t in text.logprobs)
    assert b"".join(bytes(t.bytes) for t in text.logprobs).decode() == text.text
    assert all(t.top_logprobs[0].token == t.token for t in text.logprobs)  # greedy: the likeliest
    assert respond(client, model, include=[LOGPROBS]).output[0].content[0].logprobs[0].top_logprobs == []
    assert respond(client, model).output[0].content[0].logprobs == []  # not asked for
    # beside tools, where the call parser holds text back: the text's logprobs still match it, the
    # calls' markup has none
    tool = {"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {}}}
    messages = [
        item
        for question in (QUESTION, "Look up the weather with the tool.")
        for item in respond(client, model, input=question, tools=[tool], top_logprobs=0).output
        if item.type == "message"
    ]
    assert messages  # the first question is answered in text
    for message in messages:
        (part,) = message.content
        assert part.logprobs and b"".join(bytes(t.bytes) for t in part.logprobs).decode() == part.text
    # streamed: each delta's logprobs are its text's, and the done event's are the whole text's
    events = list(respond(client, model, top_logprobs=1, stream=True))
    deltas = [e for e in events if e.type == "response.output_text.delta"]
    for delta in deltas:
        assert b"".join(bytes(t.bytes) for t in delta.logprobs).decode() == delta.delta
    (done,) = [e for e in events if e.type == "response.output_text.done"]
    final = events[-1].response.output[0].content[0].logprobs

    def dumped(logprobs) -> list[dict]:  # the SDK's types for the events' and the output's differ
        return [t.model_dump() for t in logprobs]

    assert dumped(t for d in deltas for t in d.logprobs) == dumped(done.logprobs) == dumped(final)
    assert [t.token for t in done.logprobs] == [t.token for t in text.logprobs]  # the same greedy reply
    # (its logprobs within the batch's arithmetic: this one may read the first's cached prefix)
    assert [t.logprob for t in done.logprobs] == pytest.approx([t.logprob for t in text.logprobs], abs=0.05)


def test_unsupported_features_are_a_clear_400(client, model):
    with pytest.raises(openai.BadRequestError, match=r"reasoning\.encrypted_content") as e:
        respond(client, model, include=[LOGPROBS, "reasoning.encrypted_content"])
    assert e.value.body["param"] == "include"
    with pytest.raises(openai.BadRequestError) as e:
        respond(client, model, top_logprobs=21)
    assert e.value.body["param"] == "top_logprobs"
    with pytest.raises(openai.BadRequestError, match="not supported yet") as e:
        respond(client, model, extra_body={"background": True})
    assert e.value.body["param"] == "background"


def test_unknown_fields_and_bad_types_refused(client, model):
    with pytest.raises(openai.BadRequestError) as e:
        respond(client, model, max_output_tokens=2, extra_body={"unknown_field": 1})
    assert e.value.body["param"] == "unknown_field"
    with pytest.raises(openai.BadRequestError):
        respond(
            client, model, input=[{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]
        )
    with pytest.raises(openai.BadRequestError) as e:
        respond(client, model, max_output_tokens=0)
    assert e.value.body["param"] == "max_output_tokens"
    for field, value in [("temperature", 5), ("metadata", {f"k{i}": "v" for i in range(17)})]:
        with pytest.raises(openai.BadRequestError) as e:
            respond(client, model, **{field: value})
        assert e.value.body["param"] == field


def test_truncation_auto_drops_the_oldest_turns_to_fit(client, model):
    turns = []
    for i in range(6):  # about 6 x 100 tokens, past the 300 left by a reply of 8,192 - 300 tokens
        turns += [
            {"role": "user", "content": f"Remember list {i}: " + "apple pear plum " * 30},
            {"role": "assistant", "content": f"Noted list {i}."},
        ]
    turns.append({"role": "user", "content": "Say hi."})
    one_word = {"format": {"type": "json_schema", "name": "w", "schema": {"enum": ["hi"]}, "strict": True}}
    asked = {"input": turns, "max_output_tokens": 8192 - 300, "text": one_word}  # a short reply, whatever
    with pytest.raises(openai.BadRequestError) as e:
        respond(client, model, **asked)
    assert e.value.body["code"] == "context_length_exceeded"
    r = respond(client, model, **asked, truncation="auto")
    assert r.truncation == "auto" and r.status == "completed" and r.output_text == '"hi"'
    assert 100 < r.usage.input_tokens <= 300  # the oldest turns dropped, not all


def _chat_streamed(client, model, system: str) -> tuple[int, int]:
    chunks = client.chat.completions.create(
        model=model,
        messages=[{"role": "system", "content": system}, {"role": "user", "content": "Hi"}],
        max_tokens=2,
        stream=True,
        stream_options={"include_usage": True},
    )
    usage = next(c.usage for c in chunks if c.usage)
    details = usage.prompt_tokens_details
    return details.cached_tokens, details.cache_write_tokens, usage.prompt_tokens


def _completion(client, model, system: str) -> tuple[int, int]:
    usage = client.completions.create(model=model, prompt=system, max_tokens=2).usage
    details = usage.prompt_tokens_details
    return details.cached_tokens, details.cache_write_tokens, usage.prompt_tokens


def _response(client, model, system: str) -> tuple[int, int]:
    usage = client.responses.create(model=model, instructions=system, input="Hi", max_output_tokens=2).usage
    details = usage.input_tokens_details
    return details.cached_tokens, details.cache_write_tokens, usage.input_tokens


@pytest.mark.parametrize("api", [_chat_streamed, _completion, _response])
def test_cached_tokens_zero_on_miss_then_whole_blocks_on_repeat(client, model, api):
    """The first request writes its prompt's whole blocks to the prefix cache; the second reads them."""
    system = f"{uuid.uuid4().hex} " + "You know the long history of ships and the sea. " * 6  # a first miss
    first_cached, first_written, prompt_tokens = api(client, model, system)
    second_cached, second_written, _ = api(client, model, system)
    assert first_cached == 0 and first_written == prompt_tokens // 16 * 16 > 0
    assert 0 < second_cached <= prompt_tokens and second_cached % 16 == 0 and second_written == 0
