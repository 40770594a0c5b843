"""Structured output through the official openai client: JSON schemas (response_format, Responses'
text.format, vLLM's structured_outputs), the client's .parse() helpers, regex, choice, EBNF grammars,
errors for bad constraints, and constrained rows beside unconstrained ones in one batch."""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor

import jsonschema
import openai
import pydantic
import pytest

from pyinfer.config import EngineConfig
from tests.server.structured_schemas import SCHEMAS

QUESTION = [{"role": "user", "content": "Describe a made-up record as JSON."}]
MAX_WHITESPACE_RUN = EngineConfig().max_json_whitespace  # the server's bound between two JSON tokens


def schema_format(name: str, schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


def constrained_reply(client, model, name: str, schema: dict, stream: bool, seed: int) -> tuple[str, str]:
    """(text, finish_reason) of one sampled reply under the schema, streamed or whole."""
    kwargs = dict(
        model=model,
        messages=QUESTION,
        temperature=1.0,
        seed=seed,
        max_tokens=400,
        response_format=schema_format(name, schema),
    )
    if not stream:
        choice = client.chat.completions.create(**kwargs).choices[0]
        return choice.message.content, choice.finish_reason
    chunks = [c for c in client.chat.completions.create(stream=True, **kwargs) if c.choices]
    return "".join(c.choices[0].delta.content or "" for c in chunks), chunks[-1].choices[0].finish_reason


def test_every_sampled_reply_parses_and_validates(client, model):
    cases = [(name, stream, seed) for name in SCHEMAS for stream in (False, True) for seed in (1, 2)]
    with ThreadPoolExecutor(len(cases)) as pool:  # one batch: the engine runs them side by side
        replies = list(
            pool.map(lambda c: constrained_reply(client, model, c[0], SCHEMAS[c[0]], c[1], c[2]), cases)
        )
    for (name, stream, seed), (text, finish) in zip(cases, replies, strict=True):
        assert finish == "stop", (name, stream, seed, text)
        jsonschema.validate(json.loads(text), SCHEMAS[name])
        runs = re.findall(r"\s+", text)
        assert max((len(r) for r in runs), default=0) <= MAX_WHITESPACE_RUN, (name, text)


def test_json_object_mode_gives_an_object(client, model):
    ask = 'Reply with a JSON object whose key "capital" holds the capital of France.'
    r = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": ask}],
        max_tokens=200,
        response_format={"type": "json_object"},
    )
    assert r.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(r.choices[0].message.content), dict)


class City(pydantic.BaseModel):
    name: str = pydantic.Field(max_length=20)
    country: str = pydantic.Field(max_length=20)
    population: int = pydantic.Field(ge=0, le=50_000_000)


def test_the_client_parse_helpers_return_the_parsed_object(client, model):
    messages = [{"role": "user", "content": "Give me the capital of France as JSON."}]
    completion = client.chat.completions.parse(
        model=model, messages=messages, max_tokens=200, response_format=City
    )
    assert isinstance(completion.choices[0].message.parsed, City)
    response = client.responses.parse(
        model=model, input="Give me the capital of France as JSON.", max_output_tokens=200, text_format=City
    )
    assert isinstance(response.output_parsed, City)


def test_responses_text_format_streams_valid_json(client, model):
    schema = SCHEMAS["enum"]
    fmt = {"format": {"type": "json_schema", "name": "enum", "schema": schema, "strict": True}}
    with client.responses.stream(model=model, input="Pick a color and size.", text=fmt) as stream:
        events = list(stream)
        final = stream.get_final_response()
    jsonschema.validate(json.loads(final.output_text), schema)
    # the reply says which format it was held to, as clients read it to parse (LangChain's stream does)
    assert events[0].response.text.format.type == final.text.format.type == "json_schema"
    assert final.text.format.schema_ == schema and final.text.format.name == "enum"
    assert client.responses.retrieve(final.id).text == final.text
    plain = client.responses.create(model=model, input="Hi", max_output_tokens=2)
    assert plain.text.format.type == "text"


def test_completions_take_response_format_and_vllm_structured_outputs(client, model):
    schema = SCHEMAS["flat"]
    r = client.completions.create(
        model=model,
        prompt="A person:",
        max_tokens=100,
        extra_body={"response_format": schema_format("flat", schema)},  # not in the client's signature
    )
    jsonschema.validate(json.loads(r.choices[0].text), schema)
    r = client.completions.create(
        model=model, prompt="A person:", max_tokens=100, extra_body={"structured_outputs": {"json": schema}}
    )
    jsonschema.validate(json.loads(r.choices[0].text), schema)


def test_regex_choice_and_grammar(client, model):
    def constrained(spec: dict, **kwargs) -> str:
        r = client.chat.completions.create(
            model=model, messages=QUESTION, max_tokens=40, extra_body={"structured_outputs": spec}, **kwargs
        )
        assert r.choices[0].finish_reason == "stop"  # each language below is finite: a reply ends in it
        return r.choices[0].message.content

    for seed in (1, 2, 3):
        assert re.fullmatch(
            r"[A-Z]{2}-\d{3}", constrained({"regex": r"[A-Z]{2}-\d{3}"}, seed=seed, temperature=1)
        )
        assert constrained({"choice": ["yes", "no", "maybe"]}, seed=seed, temperature=1) in {
            "yes",
            "no",
            "maybe",
        }
    # the tokens the grammar forbids (-inf) are left out of top_logprobs: they went out as null
    r = client.chat.completions.create(
        model=model,
        messages=QUESTION,
        max_tokens=5,
        logprobs=True,
        top_logprobs=5,
        extra_body={"structured_outputs": {"choice": ["yes", "no"]}},
    )
    tops = [top for token in r.choices[0].logprobs.content for top in token.top_logprobs]
    assert tops and all(isinstance(top.logprob, float) for top in tops)
    # at most three terms: an unbounded sum may run to max_tokens at temperature 1, cut off unclosed
    grammar = 'root ::= "(" expr ")"\nexpr ::= num | num op num | num op num op num\nop ::= "+" | "*"\nnum ::= [1-9] [0-9]?'
    for seed in (4, 5, 6):
        text = constrained({"grammar": grammar}, temperature=1, seed=seed)
        assert re.fullmatch(r"\([1-9][0-9]?([+*][1-9][0-9]?){0,2}\)", text), text


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"response_format": schema_format("bad", {"type": "objectx"})}, "response_format"),
        ({"response_format": {"type": "json_schema"}}, "response_format"),
        # compiles, but the grammar would let replies break it
        (
            {"response_format": schema_format("tags", {"type": "array", "uniqueItems": True})},
            "response_format",
        ),
        ({"structured_outputs": {"json": {"not": {"type": "string"}}}}, "structured_outputs.json"),
        ({"response_format": {"type": "xml"}}, "response_format"),
        ({"structured_outputs": {"regex": "("}}, "structured_outputs.regex"),
        ({"structured_outputs": {"grammar": "root ::= undefined_rule"}}, "structured_outputs.grammar"),
        ({"structured_outputs": {"regex": "a", "choice": ["b"]}}, "structured_outputs"),
        ({"structured_outputs": {"whitespace_pattern": " "}}, "structured_outputs"),
        (
            {"response_format": {"type": "json_object"}, "structured_outputs": {"regex": "a"}},
            "structured_outputs",
        ),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_a_bad_constraint_is_a_400_naming_its_field(client, model, body, param, stream):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model=model, messages=QUESTION, max_tokens=8, stream=stream, extra_body=body
        )
    assert e.value.status_code == 400 and e.value.body["param"] == param, e.value.body


def test_unconstrained_rows_beside_constrained_ones_keep_their_greedy_text(client, model):
    prompts = [f"Write one sentence about the number {i}." for i in range(32)]
    client = client.with_options(timeout=300)  # 64 requests at once on two cores: correctness, not speed

    def plain(prompt: str) -> str:
        r = client.completions.create(model=model, prompt=prompt, max_tokens=16, temperature=0)
        return r.choices[0].text

    def constrained(i: int) -> str:
        return constrained_reply(client, model, "flat", SCHEMAS["flat"], False, seed=i)[0]

    alone = [plain(p) for p in prompts[:4]]  # one at a time
    with ThreadPoolExecutor(64) as pool:
        together = [pool.submit(plain, p) for p in prompts]
        shaped = [pool.submit(constrained, i) for i in range(32)]
        texts = [f.result() for f in together]
        for f in shaped:
            jsonschema.validate(json.loads(f.result()), SCHEMAS["flat"])
    assert texts[:4] == alone
