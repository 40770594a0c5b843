"""Chat completions through the official openai client: whole, streamed, stop strings, n, seed, logprobs."""

from __future__ import annotations

import itertools
import json
import uuid

import httpx
import pytest

MESSAGES = [{"role": "user", "content": "Write one sentence about the sea."}]


def chat(client, model, **kwargs):
    kwargs.setdefault("messages", MESSAGES)
    kwargs.setdefault("max_tokens", 12)
    return client.chat.completions.create(model=model, **kwargs)


def stream_chat(client, model, **kwargs) -> tuple[list, str]:
    """All chunks, and the text the deltas add up to."""
    kwargs.setdefault("messages", MESSAGES)
    kwargs.setdefault("max_tokens", 12)
    chunks = list(client.chat.completions.create(model=model, stream=True, **kwargs))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return chunks, text


def test_chat_completion_shape(client, model):
    r = chat(client, model, temperature=0)
    assert r.id.startswith("chatcmpl-") and r.object == "chat.completion" and r.model == model
    assert r.created > 0
    (choice,) = r.choices
    assert choice.index == 0 and choice.message.role == "assistant"
    assert choice.message.content and choice.finish_reason == "length"
    u = r.usage
    assert u.completion_tokens == 12 and u.total_tokens == u.prompt_tokens + 12
    assert u.prompt_tokens_details.cached_tokens >= 0


def test_usage_counts_prompt_and_reports_performance(client, model, http):
    r = chat(client, model, temperature=0, max_tokens=6)
    tokens = http.post("/tokenize", json={"messages": MESSAGES}).json()["count"]
    assert r.usage.prompt_tokens == tokens
    perf = r.usage.model_extra["performance"]
    for key in ("queue_ms", "prefill_ms", "decode_ms", "time_to_first_token_ms"):
        assert perf[key] >= 0, key
    assert perf["decode_iterations"] == 5
    assert perf["tokens_per_second"] > 0
    assert perf["time_to_first_token_ms"] >= perf["prefill_ms"]


def test_cached_tokens_zero_on_miss_then_whole_blocks_on_repeat(client, model):
    nonce = uuid.uuid4().hex
    messages = [{"role": "system", "content": f"{nonce} " + "You answer briefly. " * 10}, *MESSAGES]
    first = chat(client, model, messages=messages, temperature=0, max_tokens=2)
    second = chat(client, model, messages=messages, temperature=0, max_tokens=2)
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    assert first.usage.prompt_tokens_details.cache_write_tokens == first.usage.prompt_tokens // 16 * 16
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert cached > 0 and cached % 16 == 0 and cached <= second.usage.prompt_tokens
    assert second.usage.prompt_tokens_details.cache_write_tokens == 0


def test_streaming_chunks(client, model):
    chunks, text = stream_chat(client, model, temperature=0, stream_options={"include_usage": True})
    first, *middle, usage_chunk = chunks
    assert first.choices[0].delta.role == "assistant"
    assert all(c.id == first.id and c.object == "chat.completion.chunk" for c in chunks)
    assert len(middle) >= 6  # tokens arrive one chunk at a time, not as one block
    assert [c.choices[0].finish_reason for c in middle][-1] == "length"
    assert all(c.choices[0].finish_reason is None for c in middle[:-1])
    assert usage_chunk.choices == [] and usage_chunk.usage.completion_tokens == 12
    assert usage_chunk.usage.prompt_tokens_details.cached_tokens >= 0
    assert "performance" in usage_chunk.usage.model_extra
    assert text


def test_streaming_without_include_usage_has_no_usage(client, model):
    chunks, _ = stream_chat(client, model, temperature=0, max_tokens=3)
    assert all(c.usage is None for c in chunks)


@pytest.mark.parametrize("include_usage", [False, True])
def test_usage_key_on_the_wire(server, model, include_usage):
    """As OpenAI documents: with include_usage every chunk has `usage`, null but the last; without, none."""
    body = {"model": model, "messages": MESSAGES, "max_tokens": 3, "stream": True}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    with httpx.stream("POST", f"{server.base_url}/v1/chat/completions", json=body, timeout=60) as r:
        chunks = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    if include_usage:
        assert all(c["usage"] is None for c in chunks[:-1]) and chunks[-1]["usage"]["completion_tokens"] == 3
    else:
        assert all("usage" not in c for c in chunks)


def test_streamed_text_equals_whole_text(client, model):
    whole = chat(client, model, temperature=0, max_tokens=20).choices[0].message.content
    _, streamed = stream_chat(client, model, temperature=0, max_tokens=20)
    assert streamed == whole


def test_sse_wire_format_ends_with_done(server, model):
    body = {"model": model, "messages": MESSAGES, "max_tokens": 3, "stream": True}
    with httpx.stream("POST", f"{server.base_url}/v1/chat/completions", json=body, timeout=60) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"


def _reference(client, model) -> tuple[str, list[str]]:
    """The greedy reply and its token strings."""
    r = chat(client, model, temperature=0, max_tokens=16, logprobs=True)
    return r.choices[0].message.content, [t.token for t in r.choices[0].logprobs.content]


def _stop_across_boundary(tokens: list[str]) -> str:
    """A stop string made of the end of one token and the start of the next."""
    for a, b in itertools.pairwise(tokens[2:]):
        if len(a) >= 2 and len(b) >= 2:
            return a[-2:] + b[:2]
    raise AssertionError(f"no suitable tokens in {tokens}")


def test_stop_string(client, model):
    text, tokens = _reference(client, model)
    stop = _stop_across_boundary(tokens)
    r = chat(client, model, temperature=0, max_tokens=16, stop=[stop, "never-seen-xyz"])
    assert r.choices[0].finish_reason == "stop"
    assert r.choices[0].message.content == text[: text.index(stop)]


def test_stop_string_across_tokens_while_streaming(client, model):
    text, tokens = _reference(client, model)
    stop = _stop_across_boundary(tokens)
    chunks, streamed = stream_chat(client, model, temperature=0, max_tokens=16, stop=stop)
    assert streamed == text[: text.index(stop)]  # no part of the stop string leaked into a chunk
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


def test_include_stop_str_in_output(client, model):
    text, tokens = _reference(client, model)
    stop = _stop_across_boundary(tokens)
    r = chat(
        client,
        model,
        temperature=0,
        max_tokens=16,
        stop=stop,
        extra_body={"include_stop_str_in_output": True},
    )
    assert r.choices[0].message.content == text[: text.index(stop) + len(stop)]


def test_n_choices(client, model):
    r = chat(client, model, n=3, temperature=1.0, seed=7, max_tokens=8)
    assert sorted(c.index for c in r.choices) == [0, 1, 2]
    assert all(c.finish_reason == "length" for c in r.choices)
    assert r.usage.completion_tokens == 24
    assert len({c.message.content for c in r.choices}) > 1


def test_n_choices_streaming(client, model):
    chunks, _ = stream_chat(client, model, n=2, temperature=1.0, seed=3, max_tokens=5)
    roles = [c.choices[0].index for c in chunks if c.choices[0].delta.role == "assistant"]
    finished = [c.choices[0].index for c in chunks if c.choices[0].finish_reason]
    assert roles == [0, 1] and sorted(finished) == [0, 1]


def test_seed_reproducible(client, model):
    texts = [
        chat(client, model, temperature=1.0, seed=s, max_tokens=12).choices[0].message.content
        for s in (11, 11, 12)
    ]
    assert texts[0] == texts[1]
    assert texts[0] != texts[2]


def test_logprobs(client, model):
    r = chat(client, model, temperature=0, max_tokens=6, logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens == 6
    assert "".join(t.token for t in content) == r.choices[0].message.content
    for t in content:
        assert len(t.top_logprobs) == 3 and t.logprob <= 0
        assert t.top_logprobs[0].token == t.token  # greedy: the chosen token is the most likely
        assert t.top_logprobs[0].logprob >= t.top_logprobs[1].logprob >= t.top_logprobs[2].logprob
        assert bytes(t.bytes).decode() == t.token


def test_logprobs_streaming(client, model):
    chunks, _ = stream_chat(client, model, temperature=0, max_tokens=5, logprobs=True, top_logprobs=1)
    entries = [
        e for c in chunks if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content
    ]
    assert len(entries) == 5 and all(len(e.top_logprobs) == 1 for e in entries)


def test_logprobs_cover_the_text_a_stop_string_leaves(client, model):
    text = chat(client, model, temperature=0, max_tokens=16).choices[0].message.content
    stop = text[4:9]  # over more than one token, so some are held back and some fall past the cut
    whole = chat(client, model, temperature=0, max_tokens=16, stop=stop, logprobs=True)
    content = whole.choices[0].message.content
    assert content == text[: text.index(stop)] and whole.choices[0].finish_reason == "stop"
    assert _just_cover(content, [t.token for t in whole.choices[0].logprobs.content])
    chunks, streamed = stream_chat(client, model, temperature=0, max_tokens=16, stop=stop, logprobs=True)
    tokens = [
        e.token for c in chunks if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content
    ]
    assert streamed == content and _just_cover(content, tokens)


def _just_cover(text: str, tokens: list[str]) -> bool:
    """Whether the tokens spell the text and no more than a last token that the cut went through."""
    spelled = "".join(tokens)
    return spelled.startswith(text) and len(spelled) - len(tokens[-1]) < len(text)


def test_logprobs_give_each_token_s_own_bytes_inside_a_character(client, model):
    schema = {"type": "object", "properties": {"a": {"const": "🐤🐞"}}, "required": ["a"]}
    r = chat(
        client,
        model,
        max_tokens=24,
        logprobs=True,
        top_logprobs=2,
        response_format={"type": "json_schema", "json_schema": {"name": "e", "schema": schema}},
    )
    content = r.choices[0].logprobs.content
    assert b"".join(bytes(t.bytes) for t in content) == r.choices[0].message.content.encode()
    partial = [t for t in content if "\\x" in t.token]
    assert partial and all("\ufffd" not in t.token for t in content)
    for t in partial:
        assert bytes(t.bytes).decode("utf-8", errors="backslashreplace") == t.token


def test_content_parts_and_developer_role(client, model):
    parts = [{"type": "text", "text": "Write one sentence "}, {"type": "text", "text": "about the sea."}]
    a = chat(client, model, temperature=0, messages=[{"role": "user", "content": parts}])
    b = chat(client, model, temperature=0)
    assert a.choices[0].message.content == b.choices[0].message.content
    c = chat(
        client, model, temperature=0, messages=[{"role": "developer", "content": "Be brief."}, *MESSAGES]
    )
    assert c.choices[0].message.content


def test_an_assistant_s_refusal_part_is_part_of_the_conversation(client, model, http):
    said = [
        {"role": "user", "content": "Tell me a secret."},
        {"role": "assistant", "content": [{"type": "refusal", "refusal": "I cannot share that."}]},
        {"role": "user", "content": "Why not?"},
    ]
    as_text = [said[0], {"role": "assistant", "content": "I cannot share that."}, said[2]]
    count = http.post("/tokenize", json={"messages": said})
    assert (
        count.status_code == 200 and count.json() == http.post("/tokenize", json={"messages": as_text}).json()
    )
    assert chat(client, model, messages=said, max_tokens=2).choices[0].message.content
    refused = {"role": "user", "content": [{"type": "refusal", "refusal": "no"}]}
    r = http.post("/v1/chat/completions", json={"model": model, "messages": [refused], "max_tokens": 2})
    assert (
        r.status_code == 400
        and "only an assistant message may have a refusal" in r.json()["error"]["message"]
    )


def test_sampling_fields_accepted(client, model):
    r = chat(
        client,
        model,
        temperature=0.8,
        top_p=0.9,
        presence_penalty=0.5,
        frequency_penalty=0.5,
        logit_bias={"100": -100},
        max_completion_tokens=4,
        user="tester",
        extra_body={
            "top_k": 20,
            "min_p": 0.05,
            "repetition_penalty": 1.1,
            "min_tokens": 2,
        },
    )
    assert r.usage.completion_tokens <= 4


def test_max_completion_tokens_wins(client, model):
    r = chat(client, model, temperature=0, max_tokens=10, max_completion_tokens=3)
    assert r.usage.completion_tokens == 3


def test_ignore_eos(client, model):
    messages = [{"role": "user", "content": "Say yes."}]
    r = chat(client, model, messages=messages, temperature=0, max_tokens=40, extra_body={"ignore_eos": True})
    assert r.usage.completion_tokens == 40 and r.choices[0].finish_reason == "length"


def test_continue_final_message_continues_the_assistant_s_words(client, model, http):
    messages = [
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "The capital of France is"},
    ]
    extra = {"continue_final_message": True, "add_generation_prompt": False}
    r = client.chat.completions.create(
        model=model, messages=messages, max_tokens=4, temperature=0, extra_body=extra
    )
    assert "Paris" in r.choices[0].message.content
    opened = http.post("/tokenize", json={"messages": messages}).json()["count"]
    continued = http.post("/tokenize", json={"messages": messages, **extra}).json()["count"]
    assert continued < opened  # no end of the assistant's turn, no new turn opened
    error = http.post(
        "/v1/chat/completions", json={"model": model, "messages": messages, "continue_final_message": True}
    )
    assert error.status_code == 400 and error.json()["error"]["param"] == "continue_final_message"


@pytest.mark.parametrize("name", ["tokenize", "messages", "tools"])
def test_chat_template_kwargs_reach_the_template_and_may_not_override_its_arguments(
    client, model, http, name
):
    messages = [{"role": "user", "content": "Hi"}]
    r = client.chat.completions.create(
        model=model,
        messages=messages,
        max_tokens=2,
        extra_body={"chat_template_kwargs": {"enable_thinking": False}},
    )
    assert r.choices[0].finish_reason == "length"
    clash = {"model": model, "messages": messages, "chat_template_kwargs": {name: 5}}
    for path in ("/v1/chat/completions", "/tokenize"):
        error = http.post(path, json=clash)
        assert error.status_code == 400 and error.json()["error"]["param"] == "chat_template_kwargs"
        assert name in error.json()["error"]["message"]
