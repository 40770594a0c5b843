"""Bad input: schemathesis, from our OpenAPI document, sends valid and invalid requests to every route and
finds no 5xx; hand-written cases each get the right 4xx in OpenAI's shape; the server serves on."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from tests.server.helpers import ServerProcess, assert_error, engine_idle, running_server, wait_until

KEY = "sk-reliable"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def guarded(tmp_path_factory) -> Iterator[ServerProcess]:
    """Keys on, and a short context: a generated request that asks for the most still ends in seconds."""
    log = tmp_path_factory.mktemp("bad-input") / "server.log"
    flags = ("--api-key", KEY, "--max-model-len", "48", "--max-num-seqs", "128", "--num-kv-blocks", "512")
    with running_server(log, *flags) as srv:
        yield srv


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_generated_requests_never_get_a_5xx(guarded, tally, mode):
    """Every operation of /openapi.json, with bodies that fit its schema and bodies that do not."""
    schema = schemathesis.openapi.from_url(f"{guarded.base_url}/openapi.json", headers=AUTH)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15 and any(op.body for op in operations)
    for operation in operations:
        if mode is GenerationMode.NEGATIVE and not (operation.body or operation.path_parameters):
            continue  # nothing to get wrong: no body, no path parameter

        @given(case=operation.as_strategy(generation_mode=mode, headers=AUTH))
        @settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def never_a_5xx(case) -> None:
            response = case.call_and_validate(checks=[not_a_server_error], timeout=120)
            tally["bad input: generated requests"] += 1
            tally["5xx seen"] += response.status_code >= 500

        try:
            never_a_5xx()
        except Unsatisfiable:  # a path parameter any string fits: nothing invalid to make of it
            assert mode is GenerationMode.NEGATIVE and not operation.body, operation.label


def post(srv: ServerProcess, path: str, **kwargs) -> httpx.Response:
    headers = {**AUTH, **kwargs.pop("headers", {})}
    return httpx.post(f"{srv.base_url}{path}", headers=headers, timeout=60, **kwargs)


def chat(**fields) -> dict:
    return {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, **fields}


CASES = [  # (what, route, body or raw bytes, status, the param named)
    ("a string for a number", "/v1/chat/completions", chat(max_tokens="ten"), 400, "max_tokens"),
    ("a list for a string", "/v1/completions", {"prompt": "hi", "stop": [1, 2]}, 400, "stop"),
    ("max_tokens past the context", "/v1/chat/completions", chat(max_tokens=10**12), 400, "max_tokens"),
    ("max_tokens past 64 bits", "/v1/completions", {"prompt": "hi", "max_tokens": 10**30}, 400, "max_tokens"),
    (
        "a seed past 64 bits",
        "/v1/completions",
        {"prompt": "hi", "max_tokens": 1, "seed": 10**30},
        400,
        "seed",
    ),
    ("negative n", "/v1/chat/completions", chat(n=-1), 400, "n"),
    ("n past 128", "/v1/chat/completions", chat(n=129), 400, "n"),
    (
        "an unknown role",
        "/v1/chat/completions",
        chat(messages=[{"role": "wizard", "content": "x"}]),
        400,
        "messages",
    ),
    ("no messages", "/v1/chat/completions", chat(messages=[]), 400, "messages"),
    (
        "an empty content list",
        "/v1/chat/completions",
        chat(messages=[{"role": "user", "content": []}]),
        400,
        "messages",
    ),
    ("an empty prompt", "/v1/completions", {"prompt": "", "max_tokens": 1}, 400, "prompt"),
    ("an empty Responses input", "/v1/responses", {"input": []}, 400, "input"),
    ("a NaN temperature", "/v1/completions", b'{"prompt": "hi", "temperature": NaN}', 400, None),
    ("invalid UTF-8", "/v1/completions", b'{"prompt": "\xff\xfe", "max_tokens": 1}', 400, None),
    ("deeply nested JSON", "/v1/chat/completions", b"[" * 100_000 + b"]" * 100_000, 400, None),
    ("a body that is not an object", "/v1/completions", b'"just a string"', 400, None),
    ("token ids outside the vocabulary", "/detokenize", {"tokens": [-1]}, 400, "tokens"),
]


@pytest.mark.parametrize(("what", "route", "body", "status", "param"), CASES, ids=[c[0] for c in CASES])
def test_hand_written_bad_input_gets_the_right_4xx(guarded, tally, what, route, body, status, param):
    raw = {"content": body} if isinstance(body, bytes) else {"json": body}
    r = post(guarded, route, **raw, headers={"content-type": "application/json"})
    tally["bad input: hand-written cases"] += 1
    tally["5xx seen"] += r.status_code >= 500
    assert_error(r, status, param)


def test_a_20_mb_body_is_a_413(guarded, tally):
    r = post(guarded, "/v1/completions", content=b'{"prompt": "' + b"x" * 20 * 2**20 + b'"}')
    assert assert_error(r, 413)["code"] == "request_too_large"
    tally["bad input: hand-written cases"] += 1


@pytest.mark.parametrize(
    "authorization",
    [
        "",
        "Bearer",
        "Token sk-reliable",
        "Bearer sk-wrong",
        "Basic c2stcmVsaWFibGU6",
        f"bearer{KEY}",
        "Bearer \u00e9t\u00e9",
    ],
)
def test_a_bad_authorization_header_is_a_401(guarded, tally, authorization):
    headers = {"Authorization": authorization.encode("utf-8")} if authorization else {}
    r = httpx.post(f"{guarded.base_url}/v1/completions", json={"prompt": "hi"}, headers=headers, timeout=30)
    assert assert_error(r, 401)["code"] == "invalid_api_key"
    tally["bad input: hand-written cases"] += 1


def test_after_all_of_it_the_server_serves_and_holds_no_block(guarded, tally):
    http = httpx.Client(base_url=guarded.base_url, headers=AUTH, timeout=60)
    wait_until(lambda: engine_idle(http), timeout=60)
    r = http.post("/v1/completions", json={"prompt": "Hello", "max_tokens": 3})
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 3
    log = guarded.log()
    assert "Traceback" not in log and "internal error" not in log
