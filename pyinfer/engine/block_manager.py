"""Paged KV blocks: free list, reference counts, and prefix caching by hash-chained full blocks.

A full block is identified by hash(parent block's hash, its token ids). Blocks whose reference
count drops to zero keep their hash and stay findable until they are reused, least recently freed first.
With KV events on, blocks made findable and hashes evicted are recorded for the step's KV-event batch.
"""

from __future__ import annotations

from collections import OrderedDict

from pyinfer.engine.kv_events import (
    BlockRemoved,
    BlockStored,
    KVCacheEvent,
    block_removed,
    block_stored,
    external_hash,
)
from pyinfer.engine.sequence import Sequence

# The parent of a sequence's first block. An int, not None: hash(None) differs from one process to the
# next before Python 3.12, and a hash of ints alone is the same in every process and replica.
ROOT_HASH = 0


class Block:
    __slots__ = ("hash", "id", "ref_count", "token_ids")

    def __init__(self, block_id: int):
        self.id = block_id
        self.ref_count = 0
        self.hash: int | None = None
        self.token_ids: tuple[int, ...] = ()


class BlockManager:
    def __init__(
        self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True, kv_events: bool = False
    ):
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.blocks = [Block(i) for i in range(num_blocks)]
        self.free: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))  # LRU first
        self.cached: dict[int, int] = {}  # block hash -> block id
        self.prefix_queries = 0  # prompt tokens looked up in the prefix cache
        self.prefix_hits = 0  # of which were found
        # Cache changes since the last take_kv_events(); None when KV events are off (nothing recorded)
        self.kv_events: list[KVCacheEvent] | None = [] if kv_events else None

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def num_free_blocks(self) -> int:
        return len(self.free)

    @property
    def usage(self) -> float:
        """Share of blocks held by live sequences."""
        return 1.0 - len(self.free) / len(self.blocks)

    def blocks_needed(self, seq: Sequence, num_tokens: int) -> int:
        return max(0, -(-num_tokens // self.block_size) - len(seq.block_table))

    def allocate_prefix(self, seq: Sequence) -> None:
        """Give a sequence with no blocks the cached blocks of its longest cached prefix."""
        assert not seq.block_table
        if self.enable_prefix_caching:
            # At least one token must be computed, to produce the logits of the next one.
            num_full = (seq.num_tokens - 1) // self.block_size
            parent = ROOT_HASH
            for i in range(num_full):
                tokens = tuple(seq.token_ids[i * self.block_size : (i + 1) * self.block_size])
                h = hash((parent, tokens))
                block_id = self.cached.get(h)
                if block_id is None or self.blocks[block_id].token_ids != tokens:
                    break
                self._take(block_id)
                seq.block_table.append(block_id)
                seq.block_hashes.append(h)
                parent = h
        seq.num_computed_tokens = len(seq.block_table) * self.block_size
        if seq.num_cached_tokens is None:
            seq.num_cached_tokens = seq.num_computed_tokens
            self.prefix_queries += seq.num_tokens
            self.prefix_hits += seq.num_computed_tokens

    def ensure_capacity(self, seq: Sequence, num_tokens: int) -> bool:
        """Grow the block table to hold num_tokens; False (and nothing taken) when blocks run out."""
        needed = self.blocks_needed(seq, num_tokens)
        if needed > len(self.free):
            return False
        for _ in range(needed):
            block_id, _ = self.free.popitem(last=False)
            block = self.blocks[block_id]
            if block.hash is not None:  # evict its cached contents
                if self.cached.get(block.hash) == block_id:
                    del self.cached[block.hash]
                    if self.kv_events is not None:
                        self._record_removed(block.hash)
                block.hash, block.token_ids = None, ()
            block.ref_count = 1
            seq.block_table.append(block_id)
        return True

    def register_full_blocks(self, seq: Sequence, num_known_tokens: int) -> None:
        """Make the sequence's newly completed blocks findable by later prompts (among its first
        num_known_tokens tokens: later ones may still be in flight)."""
        if not self.enable_prefix_caching:
            return
        num_full = min(seq.num_computed_tokens, num_known_tokens) // self.block_size
        for i in range(len(seq.block_hashes), num_full):
            tokens = tuple(seq.token_ids[i * self.block_size : (i + 1) * self.block_size])
            parent = seq.block_hashes[-1] if seq.block_hashes else ROOT_HASH
            h = hash((parent, tokens))
            block = self.blocks[seq.block_table[i]]
            block.hash, block.token_ids = h, tokens
            # A block whose hash another block holds already is a duplicate, not findable: not written
            if self.cached.setdefault(h, block.id) == block.id:
                if i < seq.num_prompt_tokens // self.block_size:
                    seq.num_cache_written_tokens += self.block_size
                if self.kv_events is not None:
                    self._record_stored(parent if i else None, h, tokens)
            seq.block_hashes.append(h)

    def free_seq(self, seq: Sequence) -> None:
        """Release a sequence's blocks; its last blocks become the first to be evicted."""
        for block_id in reversed(seq.block_table):
            block = self.blocks[block_id]
            block.ref_count -= 1
            if block.ref_count == 0:
                self.free[block_id] = None
                if block.hash is None:  # nothing worth keeping: reuse it first
                    self.free.move_to_end(block_id, last=False)
        seq.block_table = []
        seq.block_hashes = []
        seq.num_computed_tokens = 0

    def take_kv_events(self) -> list[KVCacheEvent]:
        """The cache changes recorded since the last call, in order (none when KV events are off)."""
        events = self.kv_events
        if events:
            self.kv_events = []
        return events or []

    def _record_stored(self, parent: int | None, block_hash: int, tokens: tuple[int, ...]) -> None:
        h, parent = external_hash(block_hash), None if parent is None else external_hash(parent)
        last = self.kv_events[-1] if self.kv_events else None
        if isinstance(last, BlockStored) and parent is not None and last.block_hashes[-1] == parent:
            # The next block of the last event's chain joins it: vLLM too sends a run as one event.
            last.block_hashes.append(h)
            last.token_ids.extend(tokens)
        else:
            self.kv_events.append(block_stored([h], parent, list(tokens), self.block_size))

    def _record_removed(self, block_hash: int) -> None:
        h = external_hash(block_hash)
        last = self.kv_events[-1] if self.kv_events else None
        if isinstance(last, BlockRemoved):  # evictions in a row make one event: their order is moot
            last.block_hashes.append(h)
        else:
            self.kv_events.append(block_removed([h]))

    def _take(self, block_id: int) -> None:
        block = self.blocks[block_id]
        if block.ref_count == 0:
            del self.free[block_id]
        block.ref_count += 1
