"""Block manager: prefix hits by hash chain, reference counts, LRU eviction of cached blocks."""

from __future__ import annotations

from pyinfer import SamplingParams
from pyinfer.engine.block_manager import BlockManager
from pyinfer.engine.sequence import Sequence

BS = 4


def seq(tokens: list[int], rid: str = "r") -> Sequence:
    return Sequence(rid, 0, tokens, SamplingParams(), max_len=1000)


def compute(bm: BlockManager, s: Sequence) -> None:
    """Pretend the model ran over the whole sequence."""
    bm.allocate_prefix(s)
    assert bm.ensure_capacity(s, s.num_tokens)
    s.num_computed_tokens = s.num_tokens
    bm.register_full_blocks(s, s.num_tokens)


def test_shared_prefix_is_found_and_reference_counted():
    bm = BlockManager(8, BS)
    a = seq(list(range(10)))
    compute(bm, a)
    b = seq([*range(8), 99, 98, 97])
    bm.allocate_prefix(b)
    assert b.num_cached_tokens == 8 and b.block_table == a.block_table[:2]
    assert bm.blocks[a.block_table[0]].ref_count == 2
    bm.free_seq(a)
    assert bm.blocks[b.block_table[0]].ref_count == 1


def test_different_parent_means_no_hit():
    bm = BlockManager(8, BS)
    compute(bm, seq([1, 2, 3, 4, 5, 6, 7, 8, 9]))
    other = seq([0, 2, 3, 4, 5, 6, 7, 8, 9])  # second block equal, first differs
    bm.allocate_prefix(other)
    assert other.num_cached_tokens == 0


def test_last_token_is_always_computed():
    bm = BlockManager(8, BS)
    compute(bm, seq(list(range(8))))
    again = seq(list(range(8)))
    bm.allocate_prefix(again)
    assert again.num_cached_tokens == 4  # block 2 holds the last token, which must produce logits


def test_freed_cached_blocks_survive_until_evicted_lru():
    bm = BlockManager(4, BS)
    a, b = seq(list(range(9)), "a"), seq(list(range(100, 109)), "b")
    compute(bm, a)  # 3 blocks, 2 full
    bm.free_seq(a)
    compute(bm, b)  # takes the free partial block of a first, then one cached block of a
    bm.free_seq(b)
    again = seq(list(range(9)))
    bm.allocate_prefix(again)
    # a's tail block was evicted before its head: the first block still hits
    assert again.num_cached_tokens == 4
    assert bm.usage == 1 / 4


def test_capacity_failure_takes_nothing():
    bm = BlockManager(2, BS)
    s = seq(list(range(12)))
    assert not bm.ensure_capacity(s, 12)
    assert s.block_table == [] and bm.num_free_blocks == 2


def test_prompt_blocks_made_findable_count_as_written_once():
    bm = BlockManager(8, BS)
    a = seq(list(range(8)))
    compute(bm, a)
    assert a.num_cache_written_tokens == 8
    again = seq(list(range(8)))
    compute(bm, again)  # its last block is computed again, and already findable: a duplicate
    assert again.num_cached_tokens == 4 and again.num_cache_written_tokens == 0
    b = seq(list(range(50, 55)))  # one whole prompt block
    compute(bm, b)
    b.token_ids.extend([60, 61, 62])  # output completes the second block: not the prompt's
    assert bm.ensure_capacity(b, b.num_tokens)
    b.num_computed_tokens = b.num_tokens
    bm.register_full_blocks(b, b.num_tokens)
    assert len(b.block_hashes) == 2 and b.num_cache_written_tokens == 4
