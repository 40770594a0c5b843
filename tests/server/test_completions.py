"""Legacy completions: string, list and token-id prompts, echo, streaming, logprobs, stop."""

from __future__ import annotations

import json

PROMPT = "The capital of France is"


def complete(client, model, **kwargs):
    kwargs.setdefault("prompt", PROMPT)
    kwargs.setdefault("max_tokens", 8)
    return client.completions.create(model=model, **kwargs)


def test_completion_shape(client, model):
    r = complete(client, model, temperature=0)
    assert r.id.startswith("cmpl-") and r.object == "text_completion" and r.model == model
    (choice,) = r.choices
    assert choice.index == 0 and choice.text and choice.finish_reason == "length"
    assert r.usage.completion_tokens == 8
    assert r.usage.prompt_tokens_details.cached_tokens >= 0
    assert "performance" in r.usage.model_extra


def test_streamed_text_equals_whole_text(client, model):
    whole = complete(client, model, temperature=0, max_tokens=16).choices[0].text
    chunks = list(complete(client, model, temperature=0, max_tokens=16, stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole
    assert chunks[-1].choices[0].finish_reason == "length"


def test_streaming_usage_chunk(client, model):
    chunks = list(complete(client, model, max_tokens=4, stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 4


def test_usage_key_on_the_wire(http, model):
    """With include_usage every chunk, echo included, has `usage`: null but the last."""
    body = {"model": model, "prompt": PROMPT, "max_tokens": 4, "echo": True, "stream": True}
    body["stream_options"] = {"include_usage": True}
    with http.stream("POST", "/v1/completions", json=body) as r:
        chunks = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    assert chunks[0]["choices"][0]["text"] == PROMPT
    assert all(c["usage"] is None for c in chunks[:-1]) and chunks[-1]["usage"]["completion_tokens"] == 4


def test_token_id_prompt_equals_text_prompt(client, model, http):
    ids = http.post("/tokenize", json={"prompt": PROMPT}).json()["tokens"]
    by_ids = complete(client, model, prompt=ids, temperature=0)
    by_text = complete(client, model, temperature=0)
    assert by_ids.choices[0].text == by_text.choices[0].text
    assert by_ids.usage.prompt_tokens == len(ids)


def test_several_prompts(client, model):
    r = complete(client, model, prompt=[PROMPT, "One, two, three,"], n=2, temperature=0, max_tokens=4)
    assert sorted(c.index for c in r.choices) == [0, 1, 2, 3]
    texts = {c.index: c.text for c in r.choices}
    assert texts[0] == texts[1] and texts[2] == texts[3] and texts[0] != texts[2]
    assert r.usage.completion_tokens == 16


def test_echo(client, model):
    plain = complete(client, model, temperature=0).choices[0].text
    echoed = complete(client, model, temperature=0, echo=True).choices[0].text
    assert echoed == PROMPT + plain
    streamed = "".join(
        c.choices[0].text for c in complete(client, model, temperature=0, echo=True, stream=True) if c.choices
    )
    assert streamed == PROMPT + plain


def test_logprobs(client, model):
    r = complete(client, model, temperature=0, max_tokens=5, logprobs=2)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == 5
    assert "".join(lp.tokens) == r.choices[0].text
    assert lp.text_offset[0] == 0 and lp.text_offset == sorted(lp.text_offset)
    for token, logprob, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, strict=True):
        assert logprob <= 0 and 1 <= len(top) <= 2
        assert max(top, key=top.get) == token  # greedy


def test_top_logprobs_hold_the_sampled_token_even_outside_the_top(client, model):
    # at temperature 2 most sampled tokens are not the likeliest one: up to logprobs + 1 entries
    r = complete(client, model, temperature=2.0, seed=3, max_tokens=12, logprobs=1)
    lp = r.choices[0].logprobs
    outside = 0
    for token, logprob, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, strict=True):
        assert top[token] == logprob and 1 <= len(top) <= 2
        outside += len(top) == 2
    assert outside > 0  # the case at issue came up
    sampled_only = complete(client, model, temperature=0, max_tokens=3, logprobs=0).choices[0].logprobs
    assert [list(top) for top in sampled_only.top_logprobs] == [[t] for t in sampled_only.tokens]


def test_streamed_logprobs_offsets_equal_the_whole_reply_s_under_a_stop_string(client, model):
    text = complete(client, model, temperature=0, max_tokens=16).choices[0].text
    stop = text[6:11]  # held back while it may begin, so logprobs trail the text sent
    whole = complete(client, model, temperature=0, max_tokens=16, logprobs=1, stop=stop).choices[0]
    chunks = list(complete(client, model, temperature=0, max_tokens=16, logprobs=1, stop=stop, stream=True))
    streamed = [lp for c in chunks if c.choices and c.choices[0].logprobs for lp in [c.choices[0].logprobs]]
    offsets = [o for lp in streamed for o in lp.text_offset]
    assert offsets == whole.logprobs.text_offset == sorted(offsets) and offsets[0] == 0
    assert [t for lp in streamed for t in lp.tokens] == whole.logprobs.tokens
    assert "".join(whole.logprobs.tokens).startswith(whole.text) and whole.text == text[: text.index(stop)]


def test_stop_string(client, model):
    text = complete(client, model, temperature=0, max_tokens=16).choices[0].text
    stop = text[3:7]
    r = complete(client, model, temperature=0, max_tokens=16, stop=stop)
    assert r.choices[0].text == text[: text.index(stop)] and r.choices[0].finish_reason == "stop"
