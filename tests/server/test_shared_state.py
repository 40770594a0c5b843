"""The state API processes share through one SQLite file, driven directly: two store objects (two
processes' connections) on one file behave as one store; rate-limit buckets give one allowance however
many limiters take from it."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from pyinfer.server.auth import ApiKey
from pyinfer.server.protocol_responses import FunctionCallItem, OutputMessage, OutputText, ResponseObject
from pyinfer.server.rate_limits import RateLimiter, RateLimitExceeded
from pyinfer.server.response_store import ResponseStore, StoredResponse
from pyinfer.server.shared_state import SharedState


@pytest.fixture
def states(tmp_path) -> Iterator[tuple[SharedState, SharedState]]:
    path = str(tmp_path / "shared.sqlite")
    SharedState(path).close()  # as the launcher makes it
    one, two = SharedState(path), SharedState(path)
    yield one, two
    one.close()
    two.close()


def stores(states, max_count: int = 10, max_age: float = 60) -> tuple[ResponseStore, ResponseStore]:
    return ResponseStore(states[0], max_count, max_age), ResponseStore(states[1], max_count, max_age)


def _stored(response_id: str, age: float = 0.0, status: str = "completed") -> StoredResponse:
    response = ResponseObject(
        id=response_id,
        created_at=0,
        status=status,
        instructions=None,
        max_output_tokens=None,
        metadata={},
        model="m",
        previous_response_id=None,
        store=True,
        temperature=1.0,
        top_p=1.0,
        user=None,
        text={"format": {"type": "text"}},
    )
    return StoredResponse(
        response,
        [{"role": "user", "content": "Hi"}],
        [
            {
                "id": "msg_1",
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "Hi"}],
            }
        ],
        owner="alice",
        stored_at=time.monotonic() - age,
    )


def test_the_other_store_finds_a_response_whole_and_deletes_it(states):
    a, b = stores(states)
    stored = _stored("resp_1")
    stored.response.output = [
        OutputMessage(id="msg_1", status="completed", content=[OutputText(text="Let me look.")]),
        FunctionCallItem(
            id="fc_1", call_id="call_1", name="weather", arguments='{"city": "Paris"}', status="completed"
        ),
    ]
    a.put(stored)
    found = b.get("resp_1")
    assert found is not None and found.owner == "alice" and found.stop is None
    assert found.response == stored.response and found.conversation() == stored.conversation()
    assert found.conversation()[-1]["tool_calls"][0]["function"]["name"] == "weather"
    assert b.delete("resp_1") and a.get("resp_1") is None and not a.delete("resp_1")


def test_the_count_bound_holds_across_stores(states):
    a, b = stores(states, max_count=2)
    a.put(_stored("resp_0"))
    b.put(_stored("resp_1"))
    a.put(_stored("resp_2"))
    assert b.get("resp_0") is None and b.get("resp_1") and a.get("resp_2")
    none_kept = ResponseStore(states[0], max_count=0, max_age=60)
    none_kept.put(_stored("resp_3"))
    assert b.get("resp_3") is None


def test_the_age_bound_is_wall_clock_time_across_stores(states):
    a, b = stores(states)
    a.put(_stored("resp_old", age=61))
    a.put(_stored("resp_new", age=1))
    assert b.get("resp_old") is None and b.get("resp_new")


def test_a_cancel_through_one_store_wins_over_the_others_late_finish(states):
    a, b = stores(states)
    running = _stored("resp_run", status="in_progress")
    running.stop = lambda: None
    a.put(running)
    assert "resp_run" in a.running and "resp_run" not in b.running  # the stop stays where it runs
    assert b.cancel("resp_run") and not b.cancel("resp_run")  # once
    assert a.get("resp_run").response.status == "cancelled"
    running.response.status = "completed"  # it ended as the cancel came: the owner must record a cancel
    assert not a.finish(running) and "resp_run" not in a.running
    assert b.get("resp_run").response.output == []  # nothing written
    running.response.status = "cancelled"
    running.response.output = [
        OutputMessage(id="msg_1", status="incomplete", content=[OutputText(text="Hi")])
    ]
    assert a.finish(running)
    found = b.get("resp_run")
    assert found.response.status == "cancelled" and found.response.output_text == "Hi"


def test_finishing_a_response_deleted_meanwhile_keeps_it_deleted(states):
    a, b = stores(states)
    running = _stored("resp_run", status="in_progress")
    a.put(running)
    assert b.delete("resp_run")
    running.response.status = "completed"
    assert a.finish(running) and b.get("resp_run") is None
    assert not b.cancel("resp_run")


def test_two_limiters_give_out_one_allowance(states):
    a, b = RateLimiter(states[0], 5, None), RateLimiter(states[1], 5, None)
    key = ApiKey("alice")
    for limiter in (a, b, a, b, a):
        limiter.admit_request(key)
    with pytest.raises(RateLimitExceeded) as refused:
        b.admit_request(key)
    assert 11.9 <= refused.value.wait <= 12.0  # five a minute: one back every 12 s
    headers = a.headers(a.allowance(key))
    assert headers["x-ratelimit-remaining-requests"] == "0" and headers["x-ratelimit-limit-requests"] == "5"
    assert "x-ratelimit-limit-tokens" not in headers
    b.admit_request(ApiKey("bob"))  # another key has its own


def test_token_charges_settle_across_limiters_and_may_go_into_debt(states):
    a, b = RateLimiter(states[0], None, 1000), RateLimiter(states[1], None, 1000)
    allowance = a.admit_request(ApiKey("alice"))
    a.charge_tokens(allowance, 600)
    with pytest.raises(RateLimitExceeded):
        b.charge_tokens(b.allowance(ApiKey("alice")), 600)  # what a took is gone for b too
    a.settle_tokens(allowance, charged=600, used=100)  # 500 come back
    b.charge_tokens(b.allowance(ApiKey("alice")), 600)
    b.settle_tokens(allowance, charged=0, used=1500)  # used far past its charge: into debt
    remaining = int(a.headers(allowance)["x-ratelimit-remaining-tokens"])
    assert remaining == 0
    with pytest.raises(RateLimitExceeded) as refused:
        a.charge_tokens(allowance, 1)
    assert refused.value.wait > 60  # the debt is paid off first


def test_a_key_with_a_new_limit_keeps_what_it_spent(states):
    a, b = RateLimiter(states[0], None, None), RateLimiter(states[1], None, None)
    for _ in range(8):
        a.admit_request(ApiKey("alice", requests_per_minute=10))
    # the key file now says 5 (each process reads it for itself): 2 of them are left, not 5
    headers = b.headers(b.allowance(ApiKey("alice", requests_per_minute=5)))
    assert headers["x-ratelimit-limit-requests"] == "5" and headers["x-ratelimit-remaining-requests"] == "2"
    assert a.headers(a.allowance(ApiKey("nobody"))) == {}  # no limit, nothing read
