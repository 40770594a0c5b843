"""The few shapes a GPU's eager steps run with (padded token and sampled-row counts), all chosen at start."""

from __future__ import annotations

import pytest
import torch.nn.functional as F

from pyinfer.config import EngineConfig
from pyinfer.engine.cuda_graphs import batch_size_ladder, pad_to, size_ladder
from pyinfer.engine.engine import LLMEngine
from pyinfer.engine.model_runner import EAGER_TOKENS


@pytest.mark.parametrize("step", [EAGER_TOKENS, 16])
def test_padding_climbs_powers_of_two_then_multiples_and_never_shrinks(step):
    sizes = size_ladder(20 * step, step)
    for n in range(1, 20 * step):
        p = pad_to(sizes, n)
        assert p >= n
        assert p == 1 << (n - 1).bit_length() if n <= step // 2 else p % step == 0 and p - n < step
    assert pad_to(sizes, 20 * step + 1) == 20 * step + 1  # past the top: as it is


@pytest.mark.parametrize(
    ("limit", "step"),
    [(8192, EAGER_TOKENS), (200, EAGER_TOKENS), (256, 16), (20, 16), (12, 16), (4, 16), (1, 16)],
)
def test_the_ladder_is_exactly_the_sizes_padding_gives_up_to_its_limit(limit, step):
    sizes = size_ladder(limit, step)
    assert sizes == sorted({pad_to(sizes, n) for n in range(1, limit + 1)})
    assert sizes[-1] == limit


def test_start_chooses_a_kernel_for_every_padded_shape(tiny_llama, monkeypatch):
    """Every linear layer's product at every padded token count and the LM head's at every padded count
    of sampled rows: each (rows, weight) pair a padded eager step can give."""
    engine = LLMEngine(EngineConfig(model=str(tiny_llama), device="cpu", max_num_batched_tokens=300))
    runner = engine.runner
    seen = set()
    linear = F.linear

    def recorded(x, weight, *args, **kwargs):
        seen.add((x.shape[0], tuple(weight.shape)))
        return linear(x, weight, *args, **kwargs)

    monkeypatch.setattr(F, "linear", recorded)
    runner.token_sizes = size_ladder(300, EAGER_TOKENS)  # as on a GPU with the Triton attention backend
    runner.row_sizes = batch_size_ladder(engine.config.max_num_seqs)
    runner._choose_product_kernels()
    weights = {tuple(m.weight.shape) for m in runner.model.modules() if type(m).__name__.endswith("Linear")}
    lm_head = tuple(runner.model.lm_head.weight.shape)
    for count in size_ladder(300, EAGER_TOKENS):
        for weight in weights - {lm_head}:
            assert (count, weight) in seen
    for count in batch_size_ladder(engine.config.max_num_seqs):
        assert (count, lm_head) in seen
    engine.close()
