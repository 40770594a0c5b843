"""The engine core's count of waiting requests by link: each link hears the others' figure, and only
when it changed (with one link, never)."""

from __future__ import annotations

from pyinfer.engine.link_queues import LinkQueues


def test_each_link_hears_the_others_waiting_requests_when_they_change():
    queues = LinkQueues(2)
    queues.add("a", link=0, prompt_tokens=10)
    queues.add("b", link=0, prompt_tokens=5)
    assert not queues.changed(0) and queues.changed(1)  # link 0's own requests are no news to it
    assert queues.others(1) == (2, 15) and not queues.changed(1)
    queues.add("c", link=1, prompt_tokens=7)
    assert queues.others(0) == (1, 7)
    queues.remove("a")  # its first output
    queues.remove("a")  # later outputs: nothing
    assert queues.others(1) == (1, 5)
    queues.remove("unknown")
    assert not queues.changed(0) and not queues.changed(1)


def test_one_link_never_hears_anything():
    queues = LinkQueues(1)
    queues.add("a", link=0, prompt_tokens=10)
    assert not queues.changed(0) and queues.others(0) == (0, 0)
