"""API keys against a live server: the official client with and without the right key, the routes that
stay open, and a key file edited while the server runs."""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pyinfer.server.auth import ApiKey, ApiKeyMiddleware, ApiKeys, fingerprint, parse_key_file
from pyinfer.server.config import ServerConfig
from pyinfer.server.launch import log_key_policy
from tests.server.helpers import ServerProcess, assert_error, running_server, wait_until


@pytest.fixture(scope="module")
def key_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "keys.txt"
    path.write_text("# team keys\nsk-alice alice\nsk-bob bob  # trailing comment\nsk-dave\nsk-erin\n")
    return path


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory, key_file) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("log") / "server.log"
    flags = ("--api-key", "sk-static", "--api-key-file", str(key_file), "--num-kv-blocks", "64")
    with running_server(log, *flags, "--cors-origins", "http://ui.example") as srv:
        yield srv


def client(srv: ServerProcess, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{srv.base_url}/v1", api_key=key, max_retries=0, timeout=60)


def test_the_right_key_is_served_and_a_wrong_or_missing_one_is_a_401(keyed_server):
    for key in ("sk-static", "sk-alice", "sk-bob"):
        assert client(keyed_server, key).models.list().data
    with pytest.raises(openai.AuthenticationError) as e:
        client(keyed_server, "sk-wrong").chat.completions.create(
            model="x", messages=[{"role": "user", "content": "hi"}], max_tokens=1
        )
    assert e.value.code == "invalid_api_key" and e.value.status_code == 401
    r = httpx.post(f"{keyed_server.base_url}/v1/completions", json={"prompt": "hi", "max_tokens": 1})
    error = assert_error(r, 401)
    assert error["code"] == "invalid_api_key" and "Authorization" in error["message"]
    assert r.headers["www-authenticate"] == "Bearer" and r.headers["x-request-id"]
    basic = httpx.get(f"{keyed_server.base_url}/v1/models", headers={"Authorization": "Basic sk-static"})
    assert basic.status_code == 401
    for path in ("/tokenize", "/detokenize"):
        assert httpx.post(f"{keyed_server.base_url}{path}", json={"prompt": "hi"}).status_code == 401
    for path in ("/docs", "/openapi.json", "/v1//models", "/v1/models/"):  # an allow-list: all else needs one
        assert httpx.get(f"{keyed_server.base_url}{path}").status_code == 401, path


def test_health_ready_the_ui_and_cors_preflight_need_no_key(keyed_server):
    for path in ("/health", "/ready", "/", "/version", "/metrics"):
        assert httpx.get(f"{keyed_server.base_url}{path}").status_code == 200, path
    preflight = httpx.options(
        f"{keyed_server.base_url}/v1/chat/completions",
        headers={
            "Origin": "http://ui.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert preflight.status_code == 200
    refused = httpx.get(f"{keyed_server.base_url}/v1/models", headers={"Origin": "http://ui.example"})
    assert refused.status_code == 401  # and the browser may read why:
    assert refused.headers["access-control-allow-origin"] == "http://ui.example"


def test_the_access_log_names_the_key_never_the_key(keyed_server):
    client(keyed_server, "sk-alice").models.list()
    wait_until(lambda: "/v1/models 200" in keyed_server.log() and " key=alice" in keyed_server.log(), 5)
    assert "sk-alice" not in keyed_server.log()
    assert "API keys required: 1 given by flag or variable, 4 from " in keyed_server.log()


def test_a_refused_request_is_counted_under_its_route_and_as_a_key_refusal(keyed_server):
    def counted() -> tuple[float, float]:
        text = httpx.get(f"{keyed_server.base_url}/metrics").text
        samples = [s for f in text_string_to_metric_families(text) for s in f.samples]
        labels = {"method": "POST", "route": "/v1/chat/completions", "status": "401"}
        route = sum(
            s.value
            for s in samples
            if s.name == "pyinfer:http_requests_total" and s.labels.items() >= labels.items()
        )
        refusals = sum(
            s.value
            for s in samples
            if s.name == "pyinfer:api_key_refusals_total" and s.labels == {"key": "", "status": "401"}
        )
        return route, refusals

    before = counted()
    with pytest.raises(openai.AuthenticationError):
        client(keyed_server, "sk-wrong").chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}]
        )
    # refused before routing, yet not "unmatched" (counted once the response has been sent)
    wait_until(lambda: counted() == (before[0] + 1, before[1] + 1), 5)


def test_fastapi_s_own_pages_refused_are_counted_under_their_routes(keyed_server):
    def counted(route: str) -> float:
        text = httpx.get(f"{keyed_server.base_url}/metrics").text
        samples = [s for f in text_string_to_metric_families(text) for s in f.samples]
        labels = {"method": "GET", "route": route, "status": "401"}
        return sum(
            s.value
            for s in samples
            if s.name == "pyinfer:http_requests_total" and s.labels.items() >= labels.items()
        )

    before = {route: counted(route) for route in ("/docs", "/openapi.json")}
    for route in before:
        assert httpx.get(f"{keyed_server.base_url}{route}").status_code == 401
    wait_until(lambda: all(counted(route) == n + 1 for route, n in before.items()), 5)


def test_a_key_taken_out_of_the_file_stops_working_without_a_restart(keyed_server, key_file):
    bob = client(keyed_server, "sk-bob")
    assert bob.models.list().data
    original = key_file.read_text()
    try:
        key_file.write_text("sk-alice alice\nsk-carol carol\n")
        os.utime(key_file, (time.time() + 5, time.time() + 5))  # a new stamp even within the clock's grain
        with pytest.raises(openai.AuthenticationError):
            bob.models.list()
        assert client(keyed_server, "sk-carol").models.list().data
        assert client(keyed_server, "sk-static").models.list().data  # flags' keys are not the file's
        key_file.write_text("sk-carol carol extra fields here\n")  # broken: the last good keys stay
        os.utime(key_file, (time.time() + 10, time.time() + 10))
        assert client(keyed_server, "sk-carol").models.list().data
        assert "not read again" in keyed_server.log()
    finally:
        key_file.write_text(original)
        os.utime(key_file, (time.time() + 15, time.time() + 15))


def test_key_files_parse_or_fail_naming_the_line(tmp_path):
    path = tmp_path / "k"
    keys = parse_key_file("a\n  \n# c\nb bob\n", path)
    assert {k: v.name for k, v in keys.items()} == {"a": fingerprint("a", ""), "b": "bob"}
    assert parse_key_file("a\n", path, "salt")["a"].name == fingerprint("a", "salt") != fingerprint("a", "")
    with pytest.raises(ValueError, match="k:2"):
        parse_key_file("a\nb c d e f\n", path)
    with pytest.raises(ValueError, match="k:2: the name 'x' is given twice"):
        parse_key_file("a x\nb x\n", path)
    with pytest.raises(ValueError, match="k:3: this key is given on an earlier line too"):
        parse_key_file("a x\nb\na y\n", path)
    assert parse_key_file("a alice 60 1000\n", path)["a"] == ApiKey("alice", 60, 1000)
    # a comment begins with a field: a `#` inside a key is the key's, not the start of a comment
    commented = parse_key_file("sk-abc#123 alice 5 # the web app\n\t# off: sk-old\nb#\n", path)
    assert commented == {"sk-abc#123": ApiKey("alice", 5), "b#": ApiKey(fingerprint("b#", ""))}
    path.write_text("x\n")
    assert ApiKeys([], str(path)).lookup("x").name == fingerprint("x", "")
    path.write_text(f"x {fingerprint('y', '')}\n")
    with pytest.raises(ValueError, match="taken by --api-key keys"):
        ApiKeys(["y"], str(path))
    path.write_text("y\n")
    with pytest.raises(ValueError, match="given by --api-key too"):
        ApiKeys(["y"], str(path))
    assert ApiKeys(["y"]).lookup("x") is None and not ApiKeys([]).enabled
    with pytest.raises(ValueError, match="a key is given twice by --api-key"):
        ApiKeys(["y", "y"])


def test_metrics_need_a_key_only_when_protected():
    keys = ApiKeys(["k"])
    assert not ApiKeyMiddleware(None, keys)._protected("/metrics")
    assert ApiKeyMiddleware(None, keys, protect_metrics=True)._protected("/metrics")
    assert all(ApiKeyMiddleware(None, keys)._protected(p) for p in ("/v1/models", "/tokenize", "/docs", "/x"))
    assert not any(
        ApiKeyMiddleware(None, keys)._protected(p) for p in ("/health", "/ready", "/", "/static/js/api.js")
    )


def test_a_stored_response_is_seen_only_with_the_key_that_made_it(keyed_server):
    alice, bob = client(keyed_server, "sk-alice"), client(keyed_server, "sk-static")
    model = alice.models.list().data[0].id
    made = alice.responses.create(model=model, input="Hello", max_output_tokens=2)
    assert alice.responses.retrieve(made.id).id == made.id
    with pytest.raises(openai.NotFoundError):
        bob.responses.retrieve(made.id)
    with pytest.raises(openai.NotFoundError):
        bob.responses.create(model=model, input="Go on", previous_response_id=made.id, max_output_tokens=2)
    with pytest.raises(openai.NotFoundError):
        bob.responses.delete(made.id)
    alice.responses.delete(made.id)


def test_a_key_without_a_name_keeps_its_own_when_lines_above_it_go(keyed_server, key_file):
    """Named by line, erin's key would take dave's name, and with it his stored Responses, once his line
    went."""
    dave, erin = client(keyed_server, "sk-dave"), client(keyed_server, "sk-erin")
    model = dave.models.list().data[0].id
    made = dave.responses.create(model=model, input="my secret is 42", max_output_tokens=2)
    original = key_file.read_text()
    try:
        key_file.write_text(original.replace("sk-dave\n", ""))
        os.utime(key_file, (time.time() + 20, time.time() + 20))
        with pytest.raises(openai.AuthenticationError):
            dave.models.list()
        with pytest.raises(openai.NotFoundError):
            erin.responses.input_items.list(made.id)
    finally:
        key_file.write_text(original)
        os.utime(key_file, (time.time() + 25, time.time() + 25))
    assert dave.responses.input_items.list(made.id).data[0].content[0].text == "my secret is 42"


def test_a_caller_without_a_key_is_refused_before_its_body_is_read(keyed_server):
    """A chunked body is read whole before its size is known; one from a caller without a key must not be,
    or any caller could make the server hold the largest body allowed, again and again."""
    port = int(keyed_server.base_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Transfer-Encoding: chunked\r\n\r\n10\r\n{"messages": [  \r\n'  # and the rest never comes
        )
        assert s.recv(4096).startswith(b"HTTP/1.1 401 ")


def test_the_start_warns_of_a_server_open_beyond_loopback_or_closed_to_all(caplog, tmp_path):
    caplog.set_level(logging.INFO, logger="pyinfer.server")
    (empty := tmp_path / "keys").write_text("# keys come later\n")
    with socket.create_server(("0.0.0.0", 0)) as anywhere, socket.create_server(("127.0.0.1", 0)) as local:
        log_key_policy(ApiKeys([]), ServerConfig(host="0.0.0.0"), [anywhere])
        log_key_policy(ApiKeys([]), ServerConfig(), [local])
        log_key_policy(ApiKeys(["k"]), ServerConfig(host="0.0.0.0"), [anywhere])
        log_key_policy(ApiKeys([], str(empty)), ServerConfig(), [local])
    said = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "pyinfer.server"]
    assert said == [
        ("WARNING", "no API keys: every route is open to whoever reaches 0.0.0.0"),
        ("INFO", "API keys required: 1 given by flag or variable"),
        ("WARNING", f"API keys required, but 0 from {empty}: every request that needs one is refused"),
    ]


@pytest.mark.parametrize("where", ["missing", "a folder"])
def test_a_key_file_that_cannot_be_read_stops_the_start_naming_the_flag(tmp_path, where):
    path = tmp_path / "keys" if where == "missing" else tmp_path
    with pytest.raises(
        ValueError, match=r"^--api-key-file \(or PYINFER_API_KEY_FILE\) .*: (No such|Is a dir)"
    ):
        ApiKeys([], str(path))
