"""Every error in OpenAI's shape, with the right status; unknown fields ignored."""

from __future__ import annotations

import json

import openai
import pytest

from tests.server.helpers import assert_error


def chat_body(model: str, **fields) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, **fields}


def test_malformed_json(http):
    r = http.post("/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert_error(r, 400, contains="JSON")


@pytest.mark.parametrize(
    "declared", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
def test_a_body_declared_as_other_than_json_is_a_415(http, model, declared):
    """What a web page may post to any site without a preflight: never served as JSON (nor generated)."""
    body = json.dumps(chat_body(model)).encode()
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/responses", "/tokenize"):
        error = assert_error(http.post(path, content=body, headers={"content-type": declared}), 415)
        assert declared in error["message"]
    for accepted in ("application/json; charset=utf-8", "Application/JSON", "application/vnd.api+json"):
        assert (
            http.post("/v1/chat/completions", content=body, headers={"content-type": accepted}).status_code
            == 200
        )
    assert http.post("/v1/chat/completions", content=body).status_code == 200  # none declared, by no page
    # a page's fetch of a bare ArrayBuffer declares none
    from_a_page = {"origin": "https://elsewhere.example"}
    assert_error(http.post("/v1/chat/completions", content=body, headers=from_a_page), 415)


def test_empty_body(http):
    assert_error(http.post("/v1/completions", content=b""), 400)


def test_missing_field(http, model):
    assert_error(http.post("/v1/chat/completions", json={"model": model}), 400, param="messages")
    assert_error(http.post("/v1/completions", json={"model": model}), 400, param="prompt")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_tokens", "10"),
        ("temperature", "hot"),
        ("stream", "yes"),
        ("messages", "hi"),
        ("stop", 5),
        ("n", 1.5),
    ],
)
def test_wrong_type(http, model, field, value):
    assert_error(http.post("/v1/chat/completions", json=chat_body(model, **{field: value})), 400, param=field)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("temperature", -1),
        ("temperature", 2.5),  # OpenAI's range is [0, 2]
        ("metadata", {f"k{i}": "v" for i in range(17)}),  # OpenAI's: 16 pairs, keys of 64, values of 512
        ("metadata", {"k" * 65: "v"}),
        ("metadata", {"k": "v" * 513}),
        ("top_p", 0),
        ("top_p", 1.5),
        ("n", 0),
        ("max_tokens", 0),
        ("presence_penalty", 3),
        ("frequency_penalty", -2.5),
        ("top_k", -2),
        ("min_p", 2),
        ("repetition_penalty", 0),
        ("logit_bias", {"x": 1}),
        ("logit_bias", {"5": 500}),
    ],
)
def test_impossible_value(http, model, field, value):
    assert_error(http.post("/v1/chat/completions", json=chat_body(model, **{field: value})), 400, param=field)


def test_bad_role_and_content_part(http, model):
    body = chat_body(model, messages=[{"role": "wizard", "content": "hi"}])
    assert_error(http.post("/v1/chat/completions", json=body), 400, param="messages")
    image = [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]
    body = chat_body(model, messages=[{"role": "user", "content": image}])
    assert_error(http.post("/v1/chat/completions", json=body), 400, param="messages")


@pytest.mark.parametrize("message", [{"role": "user"}, {"role": "system", "content": None}])
def test_a_message_other_than_the_assistant_s_needs_content(http, model, message):
    body = chat_body(model, messages=[message])
    error = assert_error(http.post("/v1/chat/completions", json=body), 400, param="messages")
    assert f"a message of role {message['role']} needs content" in error["message"]
    calls = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    only_calls = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": calls},
    ]
    only_calls.append({"role": "tool", "tool_call_id": "c1", "content": "4"})
    assert http.post("/v1/chat/completions", json=chat_body(model, messages=only_calls)).status_code == 200


def test_empty_messages(http, model):
    assert_error(http.post("/v1/chat/completions", json=chat_body(model, messages=[])), 400, param="messages")


def test_logprobs_limits(http, model):
    body = chat_body(model, logprobs=True, top_logprobs=21)
    assert_error(http.post("/v1/chat/completions", json=body), 400, param="top_logprobs")
    body = {"model": model, "prompt": "hi", "logprobs": 21, "max_tokens": 1}
    assert_error(http.post("/v1/completions", json=body), 400, param="logprobs")
    body = chat_body(model, top_logprobs=2)
    error = assert_error(http.post("/v1/chat/completions", json=body), 400, param="top_logprobs")
    assert "top_logprobs needs logprobs" in error["message"]


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions", "/v1/responses"])
def test_stream_options_without_a_stream_is_refused_as_openai_does(http, model, path):
    body = chat_body(model, stream_options={"include_usage": True})
    if path == "/v1/completions":
        body = {"model": model, "prompt": "hi", "max_tokens": 2, "stream_options": {"include_usage": True}}
    if path == "/v1/responses":
        body = {"model": model, "input": "hi", "max_output_tokens": 2, "stream_options": {}}
    error = assert_error(http.post(path, json=body), 400, param="stream_options")
    assert "only allowed when stream is true" in error["message"]
    assert http.post(path, json=body | {"stream": True}).status_code == 200


def test_unsupported_features_are_refused_not_ignored(http, model):
    tools = [{"type": "custom", "custom": {"name": "f"}}]  # we run function tools only
    error = assert_error(http.post("/v1/chat/completions", json=chat_body(model, tools=tools)), 400)
    assert error["param"].startswith("tools")


def test_a_priority_needs_the_priority_policy(http, model):
    error = assert_error(http.post("/v1/chat/completions", json=chat_body(model, priority=1)), 400)
    assert error["param"] == "priority" and "--scheduling-policy priority" in error["message"]
    assert http.post("/v1/chat/completions", json=chat_body(model, priority=0)).status_code == 200


def test_unknown_model_is_404(client, http):
    r = http.post("/v1/chat/completions", json=chat_body("gpt-17"))
    assert assert_error(r, 404, param="model")["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="gpt-17", prompt="hi", max_tokens=1)


def test_context_length_exceeded(client, http, model):
    r = http.post("/v1/chat/completions", json=chat_body(model, max_tokens=9000))
    error = assert_error(r, 400, param="max_tokens", contains="8192")
    assert error["code"] == "context_length_exceeded"
    prompt_tokens = http.post("/tokenize", json={"messages": [{"role": "user", "content": "hi"}]}).json()[
        "count"
    ]
    assert f"{prompt_tokens} prompt tokens + 9000" in error["message"]
    body = {"model": model, "prompt": "word " * 9000, "max_tokens": 1}  # the prompt alone is too long
    error = assert_error(
        http.post("/v1/completions", json=body), 400, param="prompt", contains="prompt too long"
    )
    assert error["code"] == "context_length_exceeded"


@pytest.mark.parametrize(
    "route, field, param",
    [
        ("/v1/chat/completions", "messages", "messages"),
        ("/v1/completions", "prompt", "prompt"),
        ("/v1/responses", "input", "input"),
    ],
)
def test_a_text_too_long_for_any_tokenization_is_refused_before_it_is_tokenized(
    http, model, route, field, param
):
    text = "ab " * 700_000  # 2.1 M characters: past 8,192 tokens of the tokenizer's longest piece
    given = [{"role": "user", "content": text}] if field == "messages" else text
    error = assert_error(
        http.post(route, json={"model": model, field: given}), 400, param=param, contains="characters of text"
    )
    assert error["code"] == "context_length_exceeded"


def test_a_text_too_long_to_fit_is_still_counted_and_cut(http, model):
    """/tokenize counts what does not fit, and Responses' truncation auto cuts it: neither is refused by
    its length before tokenizing."""
    text = "ab " * 240_000  # 720,000 characters: past 8,192 tokens of the longest piece
    counted = http.post("/tokenize", json={"messages": [{"role": "user", "content": text}]})
    assert counted.status_code == 200 and counted.json()["count"] > 8192
    turns = [
        {"role": "user", "content": text},
        {"role": "assistant", "content": "Noted."},
        {"role": "user", "content": "Say hi."},
    ]
    r = http.post(
        "/v1/responses", json={"model": model, "input": turns, "max_output_tokens": 2, "truncation": "auto"}
    )
    assert r.status_code == 200 and r.json()["usage"]["input_tokens"] < 100, r.text


@pytest.mark.parametrize(
    ("path", "field", "value"),
    [
        ("/v1/chat/completions", "max_completion_tokens", 9000),  # past the context
        ("/v1/chat/completions", "max_completion_tokens", -1),
        ("/v1/responses", "max_output_tokens", 9000),
        ("/v1/responses", "max_output_tokens", 0),
    ],
)
def test_an_error_about_the_reply_s_limit_names_the_field_that_set_it(http, model, path, field, value):
    body = chat_body(model) if path == "/v1/chat/completions" else {"model": model, "input": "hi"}
    assert_error(http.post(path, json=body | {field: value}), 400, param=field)


def test_an_empty_stop_string_is_refused_in_plain_words(http, model):
    error = assert_error(
        http.post("/v1/chat/completions", json=chat_body(model, stop=["a", ""])), 400, "stop"
    )
    assert error["message"] == "stop must not hold an empty string"


def test_token_ids_outside_vocabulary(http, model):
    r = http.post("/v1/completions", json={"model": model, "prompt": [1, 10**7], "max_tokens": 1})
    assert_error(r, 400, param="prompt", contains="vocabulary")


def test_empty_prompt(http, model):
    assert_error(
        http.post("/v1/completions", json={"model": model, "prompt": [], "max_tokens": 1}),
        400,
        param="prompt",
    )


def test_echo_with_logprobs_refused(http, model):
    body = {"model": model, "prompt": "hi", "echo": True, "logprobs": 1, "max_tokens": 1}
    assert_error(http.post("/v1/completions", json=body), 400, param="echo")


def test_stop_token_ids_outside_vocabulary_are_a_400(http, model):
    body = chat_body(model, stop_token_ids=[10**7])
    assert_error(http.post("/v1/chat/completions", json=body), 400, param="stop_token_ids")


def test_unknown_fields_are_refused_as_openai_does(http, model):
    r = http.post("/v1/chat/completions", json=chat_body(model, frobnicate=True))
    error = assert_error(r, 400, param="frobnicate", contains="Unrecognized request argument supplied")
    assert error["message"].endswith(": frobnicate")
    body = {"model": model, "input": "hi", "guided_json": {}}
    assert_error(http.post("/v1/responses", json=body), 400, param="guided_json")
    body = {"model": model, "prompt": "hi", "max_tokens": 1, "guided_choice": ["a"]}
    assert_error(http.post("/v1/completions", json=body), 400, param="guided_choice")
    assert_error(http.post("/tokenize", json={"prompt": "hi", "extra": 1}), 400, param="extra")


@pytest.mark.parametrize(
    ("route", "field", "value", "where"),
    [
        ("chat", "stream_options", {"include_usge": True}, "stream_options.include_usge"),
        ("chat", "stream_options", {"include_obfuscation": True}, "stream_options.include_obfuscation"),
        ("chat", "response_format", {"type": "json_object", "schema": {}}, "response_format.schema"),
        ("chat", "tools", [{"type": "function", "function": {"name": "f", "parameter": {}}}], "parameter"),
        ("chat", "tool_choice", {"type": "function", "function": {"name": "f", "x": 1}}, "tool_choice"),
        ("responses", "text", {"format": {"type": "json_object", "strict": True, "nme": "a"}}, "nme"),
        ("responses", "text", {"verbosity": "low"}, "text.verbosity"),
        ("responses", "stream_options", {"include_usage": True}, "stream_options.include_usage"),
        ("responses", "stream_options", {"include_obfuscation": True}, "stream_options.include_obfuscation"),
        ("responses", "tools", [{"type": "function", "name": "f", "params": {}}], "tools.0.params"),
    ],
)
def test_a_setting_inside_the_body_that_nobody_knows_is_refused(http, model, route, field, value, where):
    """A typo inside stream_options, response_format or a tool would otherwise change nothing, silently."""
    if route == "chat":
        r = http.post("/v1/chat/completions", json=chat_body(model, **{field: value}))
    else:
        body = {"model": model, "input": "hi", field: value}
        r = http.post("/v1/responses", json=body | ({"stream": True} if field == "stream_options" else {}))
    assert where in assert_error(r, 400, param=field)["message"]


SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}}


@pytest.mark.parametrize(
    ("route", "field", "value", "param", "says"),
    [
        (
            "responses",
            "text",
            {"format": {"type": "json_schema", "schema": SCHEMA}},
            "text.format.name",
            "required",
        ),
        (
            "responses",
            "text",
            {"format": {"type": "json_schema", "name": "a b", "schema": SCHEMA}},
            "text",
            "pattern",
        ),
        (
            "chat",
            "response_format",
            {"type": "json_schema", "json_schema": {"name": "a/b", "schema": SCHEMA}},
            "response_format",
            "pattern",
        ),
    ],
)
def test_a_response_format_is_named_as_openai_requires(http, model, route, field, value, param, says):
    if route == "chat":
        r = http.post("/v1/chat/completions", json=chat_body(model, **{field: value}))
    else:
        r = http.post("/v1/responses", json={"model": model, "input": "hi", field: value})
    assert says in assert_error(r, 400, param=param)["message"]


def test_a_malformed_item_of_a_union_is_named_by_the_kind_it_claims(http, model):
    """pydantic tries each kind of input item; the error is the one of the kind the item's type names."""
    body = {"model": model, "input": [{"type": "function_call_output", "call_id": "c1"}]}
    error = assert_error(http.post("/v1/responses", json=body), 400, param="input")
    assert error["message"] == "Missing required parameter: 'input.0.output'"
    body = {"model": model, "input": [{"type": "item_reference", "id": "msg_1"}]}  # a kind not served
    error = assert_error(http.post("/v1/responses", json=body), 400, param="input")
    assert error["message"].startswith("Invalid request: input.0.type: Input should be 'message'")
    assert "'function_call_output'" in error["message"]
    body = {"model": model, "input": [{"role": "user", "content": 5}]}
    error = assert_error(http.post("/v1/responses", json=body), 400, param="input")
    assert error["message"].startswith("Invalid request: input.0.content: Input should be a valid string")
    bogus = [{"type": "audio_clip", "data": "x"}]  # a list, of parts of a kind no API has
    error = assert_error(
        http.post(
            "/v1/chat/completions", json=chat_body(model, messages=[{"role": "user", "content": bogus}])
        ),
        400,
        "messages",
    )
    assert error["message"] == (
        "Invalid request: messages.0.content.0.type: Input should be 'text', or Input should be 'refusal'"
    )
    body = {"model": model, "input": [{"role": "user", "content": [{"type": "audio_clip", "data": "x"}]}]}
    error = assert_error(http.post("/v1/responses", json=body), 400, param="input")
    assert error["message"] == (
        "Invalid request: input.0.content.0.type: Input should be 'input_text' or 'output_text', "
        "or Input should be 'refusal'"
    )


@pytest.mark.parametrize(
    "route, part",
    [
        ("/v1/chat/completions", {"type": "image_url", "image_url": {"url": "http://x/y.png"}}),
        ("/v1/chat/completions", {"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}),
        ("/v1/responses", {"type": "input_image", "image_url": "https://x/y.png"}),
        ("/v1/responses", {"type": "input_file", "file_id": "file-1"}),
    ],
)
def test_an_image_audio_or_file_part_is_refused_by_name(http, model, route, part):
    """The models served read text: a part they cannot is named as not supported, not as malformed."""
    content = [{"type": "input_text" if route == "/v1/responses" else "text", "text": "What is this?"}, part]
    field = "input" if route == "/v1/responses" else "messages"
    body = {"model": model, field: [{"role": "user", "content": content}]}
    error = assert_error(http.post(route, json=body), 400, param=field)
    assert error["message"] == (
        f"Invalid request: {field}.0.content.1: content parts of type '{part['type']}' are not supported: "
        "this server's model reads text only"
    )


def test_openai_hints_are_accepted_and_features_we_lack_refused(http, model):
    hints = {"metadata": {"a": "b"}, "service_tier": "auto", "prompt_cache_key": "k", "user": "u"}
    hints |= {"safety_identifier": "s", "modalities": ["text"], "store": False, "reasoning_effort": "none"}
    assert http.post("/v1/chat/completions", json=chat_body(model, **hints)).status_code == 200
    refused = [("store", True), ("reasoning_effort", "low"), ("audio", {"voice": "x"}), ("audio", {})]
    refused += [("web_search_options", {}), ("prediction", {})]  # {} turns web search on at OpenAI
    refused += [("moderation", {"model": "omni-moderation-latest"})]
    assert http.post("/v1/chat/completions", json=chat_body(model, moderation=None)).status_code == 200
    for field, value in refused:
        error = assert_error(
            http.post("/v1/chat/completions", json=chat_body(model, **{field: value})), 400, field
        )
        assert field in error["message"]  # the message says what it is about, not only the param
    assert_error(http.post("/v1/chat/completions", json=chat_body(model, modalities=["audio"])), 400)
    ok = {"model": model, "input": "hi", "max_output_tokens": 1, "include": [], "truncation": "disabled"}
    assert http.post("/v1/responses", json=ok | {"reasoning": {"effort": None}}).status_code == 200
    for field, value in [("include", ["reasoning.encrypted_content"]), ("reasoning", {"effort": "low"})]:
        assert_error(http.post("/v1/responses", json=ok | {field: value}), 400, field)
    assert_error(http.post("/v1/responses", json=ok | {"truncation": "middle"}), 400, "truncation")
    assert_error(http.post("/v1/responses", json=ok | {"max_tool_calls": -1}), 400, "max_tool_calls")
    tool = {
        "type": "function",
        "name": "f",
        "parameters": None,
        "strict": None,
        "output_schema": {"type": "string"},
    }
    taken = {"defer_loading": False, "allowed_callers": ["direct", "programmatic"], "async": False}
    r = http.post("/v1/responses", json=ok | {"tools": [tool | taken]})
    echoed = {k: v for k, v in tool.items() if v is not None} | taken | {"strict": True}
    assert r.status_code == 200 and r.json()["tools"] == [echoed]
    for field, value in [("defer_loading", True), ("allowed_callers", ["programmatic"]), ("async", True)]:
        error = assert_error(http.post("/v1/responses", json=ok | {"tools": [tool | {field: value}]}), 400)
        assert error["param"].startswith("tools") and field in error["message"]
    newer = {"moderation": {}, "background_options": {}, "image": {"size": "auto"}, "access_programs": {}}
    for (
        field,
        value,
    ) in newer.items():  # the SDK's newest fields: a feature asked for is refused, null is none
        assert (
            field in assert_error(http.post("/v1/responses", json=ok | {field: value}), 400, field)["message"]
        )
        assert http.post("/v1/responses", json=ok | {field: None}).status_code == 200
    body = {"model": model, "prompt": "hi", "max_tokens": 1}
    assert http.post("/v1/completions", json=body | {"best_of": 1}).status_code == 200
    for field, value in [("best_of", 3), ("suffix", "end")]:
        error = assert_error(http.post("/v1/completions", json=body | {field: value}), 400, field)
        assert field in error["message"]


def test_unknown_route_and_method(http, client, model):
    assert_error(http.get("/v1/nothing-here"), 404, contains="Invalid URL (GET /v1/nothing-here)")
    with pytest.raises(openai.NotFoundError) as e:  # LangChain's OpenAIEmbeddings, pointed here
        client.embeddings.create(model=model, input="hi")
    assert e.value.body["message"] == (
        "Invalid URL (POST /v1/embeddings): this server does not serve OpenAI's embeddings API"
    )
    wrong_method = http.get("/v1/chat/completions")
    assert_error(wrong_method, 405)
    assert wrong_method.headers["allow"] == "POST"  # as HTTP requires of a 405
    for path in ("/health", "/ready", "/metrics"):  # each a GET route and a HEAD route: both named
        assert http.put(path).headers["allow"] == "GET, HEAD"
    assert http.delete("/v1/responses/resp_x/cancel").headers["allow"] == "POST"
    assert http.put("/v1/responses/resp_x").headers["allow"] == "DELETE, GET"


def test_tool_settings_without_tools_are_taken_by_responses_and_refused_by_chat(http, model):
    """OpenAI's chat refuses tool_choice without tools; its Responses API takes auto and none (the Agents
    SDK sends `tools: []` with its settings' tool_choice and parallel_tool_calls)."""
    asked = {"model": model, "input": "hi", "max_output_tokens": 2, "tools": []}
    for choice in ("auto", "none"):
        r = http.post("/v1/responses", json=asked | {"tool_choice": choice, "parallel_tool_calls": True})
        assert r.status_code == 200 and r.json()["status"] == "incomplete", r.text
    assert_error(http.post("/v1/responses", json=asked | {"tool_choice": "required"}), 400, "tool_choice")
    body = chat_body(model, tool_choice="auto")
    assert_error(http.post("/v1/chat/completions", json=body), 400, "tool_choice")
