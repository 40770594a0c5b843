"""KV-cache events in vLLM's wire format: a real engine publishing to a ZMQ subscriber, replay, drops."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

import msgspec
import pytest
import zmq

from pyinfer import SamplingParams
from pyinfer.config import EngineConfig
from pyinfer.engine.block_manager import ROOT_HASH, BlockManager
from pyinfer.engine.kv_events import (
    END_OF_REPLAY,
    BlockRemoved,
    BlockStored,
    EventBatch,
    KVEventPublisher,
    block_removed,
    external_hash,
)
from pyinfer.engine.sequence import Sequence

TOPIC = b"kv@test-pod@smollm2"
BS = 16
DECODER = msgspec.msgpack.Decoder(EventBatch)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Message:
    topic: bytes
    seq: int
    payload: bytes

    @property
    def batch(self) -> EventBatch:
        return DECODER.decode(self.payload)


class Subscriber:
    """What a router runs: a SUB socket on the live stream, a DEALER for replays."""

    def __init__(self, ctx: zmq.Context, port: int, replay_port: int):
        self.sub = ctx.socket(zmq.SUB)
        self.sub.connect(f"tcp://127.0.0.1:{port}")
        self.sub.setsockopt(zmq.SUBSCRIBE, b"kv@")  # llm-d's topic filter
        self.replay_address = f"tcp://127.0.0.1:{replay_port}"
        self.ctx = ctx
        self.received: list[Message] = []
        time.sleep(0.3)  # the subscription reaches the publisher (messages before it are not ours)

    def drain(self) -> list[Message]:
        """The messages that arrived since the last call."""
        new = []
        while self.sub.poll(200):
            topic, seq, payload = self.sub.recv_multipart()
            new.append(Message(topic, int.from_bytes(seq, "big"), payload))
        self.received += new
        return new

    def replay(self, start: int) -> list[Message]:
        dealer = self.ctx.socket(zmq.DEALER)
        dealer.connect(self.replay_address)
        dealer.send_multipart([b"", start.to_bytes(8, "big")])
        out = []
        try:
            while True:
                assert dealer.poll(5000), "replay did not end"
                empty, topic, seq, payload = dealer.recv_multipart()
                assert empty == b"" and topic == TOPIC
                if seq == END_OF_REPLAY:
                    assert payload == b""
                    return out
                out.append(Message(topic, int.from_bytes(seq, "big"), payload))
        finally:
            dealer.close(linger=0)

    def close(self) -> None:
        self.sub.close(linger=0)


@pytest.fixture(scope="module")
def ports() -> tuple[int, int]:
    return free_port(), free_port()


@pytest.fixture(scope="module")
def engine(ports):
    from pyinfer.engine.engine import LLMEngine

    port, replay_port = ports
    config = EngineConfig(
        dtype="float32",
        device="cpu",
        num_kv_blocks=8,  # 128 tokens: a few long prompts evict each other's blocks
        max_num_seqs=4,
        kv_events_endpoint=f"tcp://*:{port}",
        kv_events_replay_endpoint=f"tcp://127.0.0.1:{replay_port}",
        kv_events_topic=TOPIC.decode(),
    )
    engine = LLMEngine(config)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def subscriber(engine, ports):
    ctx = zmq.Context()
    sub = Subscriber(ctx, *ports)
    yield sub
    sub.close()
    ctx.term()


def run(engine, *prompts: list[int], max_tokens: int = 1) -> None:
    params = SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True)
    for prompt in prompts:
        engine.add_request(f"r{random.random()}", prompt, params)
    while engine.has_unfinished():
        engine.step()


def tokens(n: int, seed: int) -> list[int]:
    return random.Random(seed).choices(range(100, 40_000), k=n)


def blocks(messages: list[Message]) -> list[tuple[int | None, int, list[int]]]:
    """(parent, hash, token ids) of every stored block, in order."""
    out = []
    for m in messages:
        for e in m.batch.events:
            if isinstance(e, BlockStored):
                parents = [e.parent_block_hash, *e.block_hashes[:-1]]
                for i, (parent, h) in enumerate(zip(parents, e.block_hashes, strict=True)):
                    out.append((parent, h, e.token_ids[i * e.block_size : (i + 1) * e.block_size]))
    return out


def chain_hashes(prompt: list[int]) -> list[int]:
    """The hashes the engine gives the prompt's full blocks, recomputed here."""
    hashes, parent = [], ROOT_HASH
    for i in range(len(prompt) // BS):
        parent = hash((parent, tuple(prompt[i * BS : (i + 1) * BS])))
        hashes.append(external_hash(parent))
    return hashes


def test_a_prompt_publishes_its_full_blocks_chained(engine, subscriber):
    prompt = tokens(40, seed=1)  # two full blocks and a partial one
    run(engine, prompt)
    new = subscriber.drain()
    assert len(new) == 1 and new[0].topic == TOPIC
    # vLLM's envelope: a positional [ts, events, data_parallel_rank], each event a map tagged by "type"
    ts, events, rank = msgspec.msgpack.decode(new[0].payload)
    assert abs(ts - time.time()) < 60 and rank == 0
    assert events == [
        {
            "type": "BlockStored",
            "block_hashes": chain_hashes(prompt),
            "parent_block_hash": None,
            "token_ids": prompt[:32],
            "block_size": 16,
            "lora_id": None,
            "medium": "GPU",
            "lora_name": None,
            "group_idx": 0,
            "kv_cache_spec_kind": "full_attention",
        }
    ]
    stored = blocks(new)
    assert [parent for parent, _, _ in stored] == [None, stored[0][1]]  # each block's parent: the one before
    assert [t for _, _, t in stored] == [prompt[:16], prompt[16:32]]


def test_a_shared_prefix_is_a_cache_hit_and_only_new_blocks_are_stored(engine, subscriber):
    first = tokens(40, seed=2)
    run(engine, first)
    (h1, h2) = [h for _, h, _ in blocks(subscriber.drain())]
    hits = engine.stats()["prefix_cache_hits"]
    second = first[:32] + tokens(20, seed=3)
    run(engine, second)
    assert engine.stats()["prefix_cache_hits"] - hits == 32
    stored = blocks(subscriber.drain())
    # the shared blocks are not stored again: the new one hangs off the same hash the first prompt had
    assert stored == [(h2, chain_hashes(second)[2], second[32:48])]
    assert chain_hashes(second)[:2] == [h1, h2]


def test_block_hashes_are_the_same_in_another_process():
    """The hash of a tuple of ints does not depend on the process (PYTHONHASHSEED salts only str and
    bytes; the chain starts from 0, not None, whose hash is per process before Python 3.12), so
    replicas publish the same hashes for the same tokens."""
    prompt = tokens(48, seed=4)
    code = (
        f"p = 0\nfor i in range(0, 48, 16):\n    p = hash((p, tuple({prompt}[i : i + 16])))\n"
        "    print(p % 2**64)"
    )
    env = {**os.environ, "PYTHONHASHSEED": "7"}
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert [int(line) for line in other.stdout.split()] == chain_hashes(prompt)


def test_evictions_are_published_and_the_stream_mirrors_the_cache(engine, subscriber):
    run(engine, tokens(70, seed=5), tokens(60, seed=6))  # more than the 8 blocks hold together
    run(engine, tokens(100, seed=7))
    assert any(isinstance(e, BlockRemoved) for m in subscriber.drain() for e in m.batch.events)
    # Replaying every event in order gives exactly the hashes the engine can find now
    live: set[int] = set()
    for m in subscriber.received:
        for e in m.batch.events:
            if isinstance(e, BlockStored):
                assert live.isdisjoint(e.block_hashes)
                live.update(e.block_hashes)
            else:
                assert set(e.block_hashes) <= live  # only a stored hash is removed
                live.difference_update(e.block_hashes)
    assert live == {external_hash(h) for h in engine.block_manager.cached}
    assert engine.stats()["kv_events_dropped"] == 0


def test_sequence_numbers_have_no_gaps(engine, subscriber):
    run(engine, tokens(33, seed=8))
    subscriber.drain()
    seqs = [m.seq for m in subscriber.received]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert seqs[-1] == engine.stats()["kv_events_batches"] - 1


def test_a_late_subscriber_replays_what_it_missed(engine, subscriber, ports):
    run(engine, tokens(50, seed=9))
    subscriber.drain()
    late = Subscriber(subscriber.ctx, *ports)
    try:
        run(engine, tokens(50, seed=10))
        (first,) = late.drain()
        missed = late.replay(0)  # what llm-d asks for when it joins mid-stream
        assert [m.seq for m in missed] == list(range(first.seq + 1))
        assert missed[-1].payload == first.payload
        subscriber.drain()
        live = {m.seq: m.payload for m in subscriber.received}
        assert all(live[m.seq] == m.payload for m in missed)  # the bytes the live stream carried
        assert [m.seq for m in late.replay(first.seq)] == [first.seq]
        assert late.replay(first.seq + 1) == []  # nothing newer: only the end marker
    finally:
        late.close()


def test_a_full_queue_drops_batches_with_a_count_and_replay_recovers_them():
    publisher = KVEventPublisher("inproc://kv", "inproc://kv-replay", topic=TOPIC.decode(), hwm=2)
    sub = publisher.ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, 2)
    sub.connect("inproc://kv")
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    time.sleep(0.1)
    for i in range(10):  # nobody reads: the queue fills
        publisher.publish([block_removed([i])])
    publisher.publish([])  # a step without events sends nothing
    assert publisher.next_seq == 10 and publisher.num_dropped > 0
    received = []
    while sub.poll(100):
        received.append(int.from_bytes(sub.recv_multipart()[1], "big"))
    assert received == list(range(10 - publisher.num_dropped))
    dealer = publisher.ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.RCVTIMEO, 5000)
    dealer.connect("inproc://kv-replay")
    dealer.send_multipart([b"", received[-1].to_bytes(8, "big")])
    replayed = []
    while (frames := dealer.recv_multipart())[2] != END_OF_REPLAY:
        replayed.append(DECODER.decode(frames[3]).events[0].block_hashes[0])
    assert replayed == list(range(received[-1], 10))
    sub.close(linger=0)
    dealer.close(linger=0)
    publisher.close()


def _seq(token_ids: list[int]) -> Sequence:
    return Sequence("r", 0, token_ids, SamplingParams(), max_len=1000)


def _computed(bm: BlockManager, *seqs: Sequence) -> None:
    """Pretend the model ran over the sequences together, none seeing the others' blocks."""
    for s in seqs:
        bm.allocate_prefix(s)
        assert bm.ensure_capacity(s, s.num_tokens)
        s.num_computed_tokens = s.num_tokens
    for s in seqs:
        bm.register_full_blocks(s, s.num_tokens)


def test_block_manager_records_only_blocks_made_findable_and_hashes_dropped():
    bm = BlockManager(6, 4, kv_events=True)
    a, twin = _seq(list(range(9))), _seq(list(range(9)))
    _computed(bm, a, twin)  # the twin's full blocks duplicate a's: not findable, so no event
    (stored,) = bm.take_kv_events()
    hashes = [external_hash(h) for h in a.block_hashes]
    assert stored.block_hashes == hashes
    assert stored.parent_block_hash is None and stored.token_ids == list(range(8))
    bm.free_seq(a)
    bm.free_seq(twin)
    _computed(bm, _seq(list(range(100, 121))))  # takes all six blocks
    removed, stored = bm.take_kv_events()  # a's two hashes go; the twin's duplicates go silently
    assert isinstance(removed, BlockRemoved) and removed.block_hashes == hashes[::-1]
    assert stored.token_ids == list(range(100, 120)) and len(stored.block_hashes) == 5
    assert bm.take_kv_events() == []


def test_blocks_completed_one_call_at_a_time_extend_one_event():
    bm = BlockManager(4, 4, kv_events=True)
    s = _seq(list(range(13)))
    bm.allocate_prefix(s)
    assert bm.ensure_capacity(s, 13)
    for n in (4, 8, 12):  # as decoding completes blocks during a step
        s.num_computed_tokens = n
        bm.register_full_blocks(s, n)
    (stored,) = bm.take_kv_events()
    assert stored.block_hashes == [external_hash(h) for h in s.block_hashes] and len(s.block_hashes) == 3


def test_with_the_flag_off_nothing_is_recorded_or_published(smollm2_llm):
    assert EngineConfig().kv_events_endpoint is None
    bm = BlockManager(4, 4)
    _computed(bm, _seq(list(range(9))))
    assert bm.kv_events is None and bm.take_kv_events() == [] and bm.kv_events is None
    engine = smollm2_llm.engine
    smollm2_llm.generate([list(range(100, 140))], SamplingParams(temperature=0, max_tokens=1))
    assert engine.kv_event_publisher is None and engine.block_manager.kv_events is None
    assert "kv_events_batches" not in engine.stats()
