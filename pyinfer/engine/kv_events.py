"""KV-cache events in vLLM's wire format, published over ZMQ for prefix-aware routers."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

import msgspec
import zmq

from pyinfer.config import EngineConfig

log = logging.getLogger(__name__)

# vLLM's name for an engine's own KV cache, as opposed to an offload tier; routers weigh it highest.
MEDIUM = "GPU"
# What vLLM says of a plain decoder's single group of full-attention layers.
FULL_ATTENTION = "full_attention"
END_OF_REPLAY = (-1).to_bytes(8, "big", signed=True)  # the sequence number that ends a replay
U64 = (1 << 64) - 1
DATA_PARALLEL_RANK = 0  # one engine per server: the rank vLLM writes without data parallelism


def external_hash(block_hash: int) -> int:
    """Our signed 64-bit block hash as the unsigned one vLLM publishes (a bijection)."""
    return block_hash & U64


class KVCacheEvent(msgspec.Struct, tag=True, omit_defaults=True, gc=False):
    """One change to the prefix cache. Encoded as a map tagged by its class name under "type", as
    vLLM does since it dropped positional events (vllm-project/vllm#42892)."""


class BlockStored(KVCacheEvent):
    """Full blocks newly findable, in chain order: each block's parent is the one before it, the
    first block's is parent_block_hash (None at a sequence's start); token_ids are all theirs."""

    block_hashes: list[int]
    parent_block_hash: int | None
    token_ids: list[int]
    block_size: int
    lora_id: int | None  # no default: always on the wire, as vLLM writes it
    medium: str | None
    lora_name: str | None
    extra_keys: list | None = None  # multimodal or salt keys per block: we have none
    group_idx: int | None = None
    kv_cache_spec_kind: str | None = None
    kv_cache_spec_sliding_window: int | None = None


class BlockRemoved(KVCacheEvent):
    block_hashes: list[int]
    medium: str | None
    group_idx: int | None = None


class AllBlocksCleared(KVCacheEvent):
    pass


class EventBatch(msgspec.Struct, array_like=True, omit_defaults=True, gc=False):
    """One step's events. Positional ([ts, events, data_parallel_rank]), as vLLM keeps its batch."""

    ts: float
    events: list[BlockStored | BlockRemoved | AllBlocksCleared]
    data_parallel_rank: int | None = None


def block_stored(hashes: list[int], parent: int | None, tokens: list[int], block_size: int) -> BlockStored:
    return BlockStored(
        block_hashes=hashes,
        parent_block_hash=parent,
        token_ids=tokens,
        block_size=block_size,
        lora_id=None,
        medium=MEDIUM,
        lora_name=None,
        group_idx=0,
        kv_cache_spec_kind=FULL_ATTENTION,
    )


def block_removed(hashes: list[int]) -> BlockRemoved:
    return BlockRemoved(block_hashes=hashes, medium=MEDIUM, group_idx=0)


def _bind_or_connect(socket: zmq.Socket, endpoint: str) -> None:
    # vLLM's rule: a wildcard or local transport is ours to bind; a named host is a subscriber that
    # bound first (a central indexer), so we connect to it.
    if "*" in endpoint or "::" in endpoint or endpoint.startswith(("ipc://", "inproc://")):
        socket.bind(endpoint)
    else:
        socket.connect(endpoint)


class KVEventPublisher:
    """Publishes each step's events as one EventBatch: multipart [topic, sequence number (8 bytes,
    big-endian), msgpack payload] on a PUB socket. The last `buffer_steps` batches are kept for
    replay on a ROUTER socket served by a thread of its own, so the step loop never waits on it."""

    def __init__(
        self,
        endpoint: str,
        replay_endpoint: str | None = None,
        topic: str = "",
        buffer_steps: int = 10_000,
        hwm: int = 100_000,
    ):
        self.ctx = zmq.Context()
        self.pub = self.ctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.SNDHWM, hwm)
        # A full queue fails the send instead of dropping the batch silently, so drops are counted;
        # the batch stays in the replay buffer and the subscriber, seeing the gap, asks for it.
        self.pub.setsockopt(zmq.XPUB_NODROP, 1)
        self.pub.setsockopt(zmq.LINGER, 0)
        _bind_or_connect(self.pub, endpoint)
        self.topic = topic.encode()
        self.encoder = msgspec.msgpack.Encoder()
        self.buffer: deque[tuple[int, bytes]] = deque(maxlen=buffer_steps)
        self.next_seq = 0
        self.num_dropped = 0  # batches the socket's queue had no room for
        self._replay_thread: threading.Thread | None = None
        if replay_endpoint:
            router = self.ctx.socket(zmq.ROUTER)
            router.setsockopt(zmq.ROUTER_MANDATORY, 1)  # a full peer makes sends wait, never vanish
            router.setsockopt(zmq.SNDTIMEO, 5000)  # ... for a while: a reader that stalls is given up
            router.setsockopt(zmq.LINGER, 0)
            router.bind(replay_endpoint)
            self._replay_thread = threading.Thread(
                target=self._serve_replays, args=(router,), name="kv-events-replay", daemon=True
            )
            self._replay_thread.start()

    @classmethod
    def from_config(cls, config: EngineConfig) -> KVEventPublisher | None:
        if config.kv_events_endpoint is None:
            return None
        publisher = cls(
            config.kv_events_endpoint,
            config.kv_events_replay_endpoint,
            config.kv_events_topic,
            config.kv_events_buffer_steps,
            config.kv_events_hwm,
        )
        log.info(
            "publishing KV-cache events on %s (replay: %s, topic %r)",
            config.kv_events_endpoint,
            config.kv_events_replay_endpoint or "none",
            config.kv_events_topic,
        )
        return publisher

    def stats(self) -> dict[str, int | float]:
        return {"kv_events_batches": self.next_seq, "kv_events_dropped": self.num_dropped}

    def publish(self, events: list[KVCacheEvent]) -> None:
        """Send one step's events as the next batch, without blocking; nothing is sent for none."""
        if not events:
            return
        seq = self.next_seq
        self.next_seq += 1
        payload = self.encoder.encode(EventBatch(time.time(), events, DATA_PARALLEL_RANK))
        self.buffer.append((seq, payload))  # first, so that a batch the socket drops can be replayed
        try:
            self.pub.send_multipart((self.topic, seq.to_bytes(8, "big"), payload), flags=zmq.NOBLOCK)
        except zmq.Again:
            self.num_dropped += 1

    def _serve_replays(self, router: zmq.Socket) -> None:
        while True:
            try:
                frames = router.recv_multipart()
                if len(frames) == 3:  # [identity, empty delimiter, start]: a REQ or DEALER request
                    self._replay(router, *frames)
            except zmq.ContextTerminated:  # close() was called
                router.close()
                return
            except zmq.ZMQError:
                continue  # the requester is gone or stopped reading: the rest of its replay is dropped

    def _replay(self, router: zmq.Socket, identity: bytes, empty: bytes, start: bytes) -> None:
        """The buffered batches from sequence number `start` on, each [topic, seq, payload] as
        published, then [topic, END_OF_REPLAY, empty]."""
        start_seq = int.from_bytes(start, "big")
        for seq, payload in list(self.buffer):  # a copy: the step loop appends meanwhile
            if seq >= start_seq:
                router.send_multipart((identity, empty, self.topic, seq.to_bytes(8, "big"), payload))
        router.send_multipart((identity, empty, self.topic, END_OF_REPLAY, b""))

    def close(self) -> None:
        self.pub.close()
        self.ctx.term()  # interrupts the replay thread's wait, which then closes its socket
        if self._replay_thread is not None:
            self._replay_thread.join(timeout=5)
