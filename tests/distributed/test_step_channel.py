"""Rank 0's step channel: every plan arrives whole and in order, in the ring or past a slot's size on the
socket, at every receiver; stop ends them; a receiver learns when rank 0 is gone."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

from pyinfer.distributed.step_channel import SLOTS, StepReceiver, StepSender


def receivers(sender: StepSender, n: int) -> list[StepReceiver]:
    """Each receiver from its own copies of the descriptors, as a process of its own would hold them."""
    return [StepReceiver(*(os.dup(fd) for fd in sender.receiver_fds(i)), i, n) for i in range(n)]


def test_plans_arrive_whole_and_in_order_in_the_ring_and_on_the_socket():
    sender = StepSender(2, slot_bytes=1024)  # 128 values fit a slot
    ends = receivers(sender, 2)
    sender.close_receiver_fds()
    rng = np.random.default_rng(0)
    plans = [rng.integers(-(2**40), 2**40, size=int(n)) for n in rng.integers(1, 400, size=3 * SLOTS)]
    assert any(p.size > 128 for p in plans) and any(p.size <= 128 for p in plans)
    for plan in plans:
        sender.send(plan)
        for end in ends:
            np.testing.assert_array_equal(end.receive(), plan)
    sender.stop()
    assert [end.receive() for end in ends] == [None, None]
    sender.close()


def test_the_sender_waits_for_a_slot_still_being_read_and_loses_nothing():
    sender = StepSender(1, slot_bytes=64)
    (end,) = receivers(sender, 1)
    for k in range(SLOTS):  # the ring is full: nothing read yet
        sender.send(np.full(8, k))
    late = threading.Thread(target=sender.send, args=(np.full(8, SLOTS),))
    late.start()
    late.join(0.2)
    assert late.is_alive()  # slot 0 is still unread
    got = [end.receive()]
    late.join(5)
    assert not late.is_alive()
    got += [end.receive() for _ in range(SLOTS)]
    assert [int(v[0]) for v in got] == list(range(SLOTS + 1))


def test_a_receiver_learns_that_rank_0_is_gone():
    sender = StepSender(1)
    (end,) = receivers(sender, 1)
    sender.close_receiver_fds()
    sender.close()
    with pytest.raises(ConnectionError):
        end.receive()
