"""The sampler against direct computations on fresh random logits."""

from __future__ import annotations

import pytest
import torch

from pyinfer.layers.sampler import Sampler, SamplingTensors, _inverse_cdf, _race

V = 50


def tensors(rows: int, temperature: float = 1.0, **kw) -> SamplingTensors:
    greedy = temperature == 0
    return SamplingTensors(
        all_greedy=greedy,
        temperature=torch.full((rows,), 1.0 if greedy else temperature),
        greedy=torch.full((rows,), greedy),
        **kw,
    )


def logits(rows: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randn(rows, V, generator=torch.Generator().manual_seed(seed)) * 3


def test_greedy_is_argmax():
    x = logits()
    assert torch.equal(Sampler()(x, tensors(4, 0.0)).token_ids, x.argmax(-1))


def test_a_precomputed_argmax_serves_plain_greedy_rows_only():
    x = logits()
    stale = torch.zeros(4, dtype=torch.long)  # what the decode graph computed, here deliberately wrong
    assert torch.equal(Sampler()(x, tensors(4, 0.0), stale).token_ids, stale)
    banned = tensors(4, 0.0, banned_rows=torch.arange(4), banned_tokens=x.argmax(-1))
    expected = x.scatter(1, x.argmax(-1, keepdim=True), -float("inf")).argmax(-1)
    assert torch.equal(Sampler()(x, banned, stale).token_ids, expected)
    with_logprobs = tensors(4, 0.0, max_logprobs=0)
    assert torch.equal(Sampler()(x, with_logprobs, stale).token_ids, x.argmax(-1))


def test_top_k_1_top_p_tiny_and_min_p_1_all_reduce_to_argmax():
    x = logits(8, seed=1)
    for kw in (
        {"top_k": torch.ones(8, dtype=torch.long)},
        {"top_p": torch.full((8,), 1e-6)},
        {"min_p": torch.ones(8)},
    ):
        for _ in range(5):
            assert torch.equal(Sampler()(x, tensors(8, **kw)).token_ids, x.argmax(-1)), kw


def test_top_k_only_samples_among_the_k_best():
    x = logits(2, seed=2)
    top3 = x.topk(3, dim=-1).indices
    for _ in range(30):
        ids = Sampler()(x, tensors(2, 5.0, top_k=torch.full((2,), 3))).token_ids
        assert all(ids[r] in top3[r] for r in range(2))


def test_sampling_follows_the_distribution():
    x = torch.tensor([[0.0, 1.0, 2.0, -30.0]]).repeat(4000, 1)
    ids = Sampler()(x, tensors(4000)).token_ids
    freq = torch.bincount(ids, minlength=4).float() / 4000
    torch.testing.assert_close(freq, x[0].softmax(-1), atol=0.03, rtol=0)


@pytest.mark.parametrize("draw", [_race, _inverse_cdf])
def test_both_draws_follow_the_distribution_and_never_draw_an_impossible_token(draw):
    """The GPU's race and the CPU's inverse CDF, both run here on the same probabilities."""
    probs = torch.tensor([[0.0, 0.2, 0.0, 0.5, 0.3, 0.0]]).repeat(20000, 1)
    ids = draw(probs, None)
    freq = torch.bincount(ids, minlength=6).float() / 20000
    torch.testing.assert_close(freq, probs[0], atol=0.015, rtol=0)
    assert freq[[0, 2, 5]].sum() == 0


@pytest.mark.parametrize("draw", [_race, _inverse_cdf])
def test_a_seeded_row_draws_the_same_token_again(draw):
    probs = torch.rand(3, 1000).softmax(-1)
    seeded = [draw(probs, [None, torch.Generator().manual_seed(7), None])[1].item() for _ in range(5)]
    assert len(set(seeded)) == 1


def test_logit_bias_forces_a_token():
    x = logits()
    st = tensors(
        4, 0.0, bias_rows=torch.tensor([1]), bias_tokens=torch.tensor([7]), bias_values=torch.tensor([100.0])
    )
    ids = Sampler()(x, st).token_ids
    assert ids[1] == 7 and torch.equal(ids[[0, 2, 3]], x.argmax(-1)[[0, 2, 3]])


def test_banned_tokens_are_never_chosen():
    x = logits(2)
    best = x.argmax(-1)
    st = tensors(2, 0.0, banned_rows=torch.tensor([0, 1]), banned_tokens=best)
    assert (Sampler()(x, st).token_ids != best).all()


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_a_grammar_that_allows_only_a_banned_stop_token_gets_it(temperature):
    """Row 0 is below min_tokens (stop token 7 banned) but its grammar allows only 7: the grammar wins.
    Row 1's grammar allows 7 and 9: the ban holds there."""
    bitmask = torch.zeros(2, 2, dtype=torch.int32)
    bitmask[0, 0] = 1 << 7
    bitmask[1, 0] = (1 << 7) | (1 << 9)
    st = tensors(
        2,
        temperature,
        banned_rows=torch.tensor([0, 1]),
        banned_tokens=torch.tensor([7, 7]),
        token_bitmask=bitmask,
    )
    out = Sampler()(logits(2), st)
    assert out.token_ids.tolist() == [7, 9]


def test_penalties_match_their_definitions():
    x = logits(1, seed=3)
    prompt, output = [4, 9], [9, 9, 11]
    st = tensors(
        1,
        0.0,
        prompt_ids=torch.tensor([prompt]),
        output_ids=torch.tensor([output]),
        repetition_penalty=torch.tensor([[1.3]]),
        presence_penalty=torch.tensor([[0.5]]),
        frequency_penalty=torch.tensor([[0.25]]),
        max_logprobs=0,
    )
    expected = x.clone()
    for t in {4, 9, 11}:
        expected[0, t] = expected[0, t] / 1.3 if expected[0, t] > 0 else expected[0, t] * 1.3
    for t in {9, 11}:
        expected[0, t] -= 0.25 * output.count(t) + 0.5
    out = Sampler()(x, st)
    assert out.token_ids.item() == expected.argmax().item()
    torch.testing.assert_close(out.logprobs, expected.log_softmax(-1)[0, out.token_ids])


def test_logprobs_and_top_alternatives():
    x = logits()
    out = Sampler()(x, tensors(4, 0.0, max_logprobs=3))
    ref = x.log_softmax(-1)
    torch.testing.assert_close(out.logprobs, ref.max(-1).values)
    torch.testing.assert_close(out.top_logprobs, ref.topk(3, -1).values)
    assert torch.equal(out.top_ids[:, 0], x.argmax(-1))


def test_seeded_rows_do_not_depend_on_the_rest_of_the_batch():
    x = logits(3, seed=4)

    def draw(rows: torch.Tensor, seeded_row: int) -> int:
        gens = [None] * rows.shape[0]
        gens[seeded_row] = torch.Generator().manual_seed(42)
        st = tensors(rows.shape[0], generators=gens)
        return Sampler()(rows, st).token_ids[seeded_row].item()

    alone = [draw(x[1:2], 0) for _ in range(3)]
    crowded = [draw(x, 1) for _ in range(3)]
    assert alone == crowded


def test_a_row_with_nothing_to_draw_takes_its_argmax_not_the_last_token():
    probs = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.1, 0.6, 0.3, 0.0]])
    assert _inverse_cdf(probs, None)[0].item() == 0
