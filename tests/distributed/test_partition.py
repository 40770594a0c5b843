"""How weights split across ranks: contiguous shares that cover everything once, whole heads with their
KV heads (uneven, or a KV head copied where there are fewer than ranks), equal padded vocabulary shards."""

from __future__ import annotations

import itertools

import pytest

from pyinfer.distributed import HeadShard, ParallelGroup, check_split, head_shard, shard_range, vocab_shard


def ranks(size: int) -> list[ParallelGroup]:
    return [ParallelGroup(rank, size) for rank in range(size)]


@pytest.mark.parametrize(("total", "size", "align"), [(1536, 2, 32), (160, 3, 32), (10, 4, 1), (100, 1, 32)])
def test_shares_cover_the_total_once_in_whole_units(total, size, align):
    shares = [shard_range(total, group, align) for group in ranks(size)]
    assert shares[0][0] == 0
    for (start, n), (next_start, _) in itertools.pairwise(shares):
        assert start + n == next_start and start % align == 0 and n > 0
    assert sum(n for _, n in shares) == total


@pytest.mark.parametrize(
    ("heads", "kv", "size", "expected"),
    [
        (9, 3, 2, [HeadShard(0, 6, 0, 2), HeadShard(6, 3, 2, 1)]),  # SmolLM2: uneven
        (32, 8, 4, [HeadShard(8 * r, 8, 2 * r, 2) for r in range(4)]),  # Llama 3 8B
        (4, 1, 2, [HeadShard(0, 2, 0, 1), HeadShard(2, 2, 0, 1)]),  # one KV head, copied
        (
            8,
            2,
            4,
            [HeadShard(0, 2, 0, 1), HeadShard(2, 2, 0, 1), HeadShard(4, 2, 1, 1), HeadShard(6, 2, 1, 1)],
        ),
    ],
)
def test_heads_split_with_their_kv_heads(heads, kv, size, expected):
    shards = [head_shard(heads, kv, group) for group in ranks(size)]
    assert shards == expected
    per_kv = heads // kv
    for s in shards:  # every query head reads a KV head held on its own rank
        assert (
            s.kv_start <= s.q_start // per_kv
            and (s.q_start + s.num_heads - 1) // per_kv < s.kv_start + s.num_kv_heads
        )


def test_a_split_that_does_not_divide_is_refused_before_any_rank_starts():
    with pytest.raises(ValueError, match="cannot be split across 3 ranks"):
        check_split(4, 2, 160, 3)
    check_split(9, 3, 1536, 2)


def test_vocabulary_shards_are_equal_and_padded():
    shards = [vocab_shard(321, group) for group in ranks(2)]
    assert shards == [(0, 161), (161, 161)]  # the last rank's row 160 is padding
    assert vocab_shard(49152, ParallelGroup()) == (0, 49152)
