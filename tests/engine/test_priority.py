"""The priority scheduling policy: an urgent request runs at once in a full batch, preempting the least
urgent, and everyone still gets the same greedy tokens as alone."""

from __future__ import annotations

import pytest

from pyinfer import SamplingParams
from pyinfer.config import EngineConfig
from pyinfer.engine.engine import LLMEngine
from pyinfer.sampling_params import SamplingParamsError


def engine(tiny_llama, policy: str, **config) -> LLMEngine:
    return LLMEngine(
        EngineConfig(str(tiny_llama), device="cpu", dtype="float32", scheduling_policy=policy, **config)
    )


def run(eng: LLMEngine) -> dict[str, list[int]]:
    tokens: dict[str, list[int]] = {}
    while eng.has_unfinished():
        for out in eng.step():
            tokens.setdefault(out.request_id, []).extend(out.new_token_ids)
    return tokens


def greedy(max_tokens: int, priority: int = 0) -> SamplingParams:
    return SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True, priority=priority)


@pytest.mark.parametrize("tiny_llama", ["tied"], indirect=True)
def test_an_urgent_request_preempts_the_least_urgent_and_tokens_stay_the_same(tiny_llama):
    prompts = {name: [(7 * i + len(name)) % 300 + 3 for i in range(20)] for name in ("low", "mid", "urgent")}
    alone = {}
    for name, prompt in prompts.items():
        solo = engine(tiny_llama, "priority", max_num_seqs=2, num_kv_blocks=64)
        solo.add_request(name, prompt, greedy(40))
        alone.update(run(solo))

    eng = engine(tiny_llama, "priority", max_num_seqs=2, num_kv_blocks=64)
    eng.add_request("low", prompts["low"], greedy(40, priority=5))
    eng.add_request("mid", prompts["mid"], greedy(40, priority=1))
    tokens: dict[str, list[int]] = {}
    for _ in range(3):  # both run, the batch is full
        for out in eng.step():
            tokens.setdefault(out.request_id, []).extend(out.new_token_ids)
    eng.add_request("urgent", prompts["urgent"], greedy(40, priority=-1))
    for out in eng.step():  # its first token comes in the very next step
        tokens.setdefault(out.request_id, []).extend(out.new_token_ids)
    assert len(tokens.get("urgent", [])) == 1
    assert [s.request_id for s in eng.scheduler.waiting] == ["low"]  # the least urgent gave way
    for rid, more in run(eng).items():
        tokens.setdefault(rid, []).extend(more)
    assert tokens == alone
    assert eng.scheduler.num_preemptions >= 1


@pytest.mark.parametrize("tiny_llama", ["tied"], indirect=True)
def test_first_come_first_served_keeps_the_urgent_waiting_and_refuses_a_priority(tiny_llama):
    eng = engine(tiny_llama, "fcfs", max_num_seqs=1, num_kv_blocks=64)
    with pytest.raises(SamplingParamsError, match="priority"):
        eng.add_request("x", [5, 6, 7], greedy(4, priority=-1))
    eng.add_request("first", [5, 6, 7], greedy(8))
    eng.step()
    eng.add_request("second", [8, 9, 10], greedy(8))
    outputs = eng.step()
    assert {o.request_id for o in outputs} == {"first"}
    run(eng)


@pytest.mark.parametrize("tiny_llama", ["tied"], indirect=True)
def test_the_waiting_queue_keeps_urgency_order(tiny_llama):
    eng = engine(tiny_llama, "priority", max_num_seqs=1, num_kv_blocks=64)
    eng.add_request("running", [3, 4, 5], greedy(30))
    eng.step()
    for name, priority in (("b", 3), ("a", 1), ("c", 3), ("d", 0)):
        eng.add_request(name, [6, 7, 8], greedy(2, priority=priority))
    # "running" (0) is as urgent as "d" but came first: it keeps the slot
    assert [s.request_id for s in eng.scheduler.waiting] == ["d", "a", "b", "c"]
    run(eng)


@pytest.mark.parametrize("tiny_llama", ["tied"], indirect=True)
def test_a_full_queue_sheds_the_least_urgent_request_that_has_not_started(tiny_llama):
    """Past the queue's bounds the least urgent waiting request that has not run leaves (the latest of
    equals); one preempted after it ran stays, and so does the running one."""
    eng = engine(tiny_llama, "priority", max_num_seqs=1, num_kv_blocks=64)
    prompt = list(range(3, 23))
    eng.add_request("running", prompt, greedy(30, priority=9))
    eng.step()
    for rid, priority in (("low", 5), ("low-later", 5), ("mid", 1)):
        eng.add_request(rid, prompt, greedy(4, priority=priority))
    assert eng.shed_past(3, None) == []
    eng.add_request("urgent", prompt, greedy(4, priority=0))
    assert eng.shed_past(3, None) == ["low-later"]  # four waited: the latest of the least urgent goes
    assert not eng.has_request("low-later") and eng.has_request("low")
    assert eng.shed_past(None, 3 * len(prompt)) == []
    assert eng.shed_past(None, 2 * len(prompt)) == ["low"]  # by prompt tokens too
    assert eng.shed_past(1, None) == ["mid"]
    assert eng.shed_past(1, 1) == []  # one alone stays, whatever its length
    eng.step()  # the urgent one preempts the running one, which waits again
    assert [s.request_id for s in eng.scheduler.waiting] == ["running"]
    eng.add_request("late", prompt, greedy(4, priority=0))
    assert eng.shed_past(1, None) == []  # it ran: not among those that may be shed, nor counted
    tokens = run(eng)
    assert set(tokens) == {"running", "urgent", "late"} and len(tokens["running"]) == 29  # 1 came first


@pytest.mark.parametrize("tiny_llama", ["tied"], indirect=True)
def test_the_other_choices_of_a_request_that_started_are_never_shed(tiny_llama):
    """Choices 2..n join the queue once the first has its first token: they are part of a request that
    started, neither counted nor shed (shedding them once failed the request after it had streamed)."""
    eng = engine(tiny_llama, "fcfs", max_num_seqs=8, num_kv_blocks=64)
    eng.add_request("many", list(range(3, 23)), SamplingParams(temperature=0.8, max_tokens=8, n=5, seed=1))
    eng.step()
    assert len(eng.scheduler.waiting) + len(eng.scheduler.running) == 5
    assert eng.shed_past(1, 1) == []
    assert len(run(eng)) == 1 and eng.scheduler.block_manager.num_free_blocks == 64
