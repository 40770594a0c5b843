"""Constrained decoding in the engine: every choice of n follows the grammar, through preemption, prefix
caching and logprobs; a constraint that cannot compile is refused naming its field; a request aborted
while its grammar compiles leaves nothing behind."""

from __future__ import annotations

import json
import math
import re

import jsonschema
import pytest

from pyinfer import SamplingParams
from pyinfer.engine.llm import LLM
from pyinfer.sampling_params import SamplingParamsError, StructuredOutput
from tests.server.structured_schemas import SCHEMAS

JSON = StructuredOutput(kind="json", spec=json.dumps(SCHEMAS["nested"]))


@pytest.fixture(scope="module")
def tight_llm() -> LLM:
    """A KV cache of 24 blocks: eight 60-token choices cannot all fit, so some are preempted."""
    return LLM(device="cpu", dtype="float32", num_kv_blocks=24, max_num_seqs=8)


def test_every_choice_follows_the_schema_through_preemption(tight_llm):
    params = SamplingParams(temperature=1.0, seed=3, n=8, max_tokens=150, structured=JSON)
    (result,) = tight_llm.chat([{"role": "user", "content": "A user record as JSON."}], params)
    assert tight_llm.engine.scheduler.num_preemptions > 0
    for choice in result.outputs:
        assert choice.finish_reason == "stop", choice.text
        jsonschema.validate(json.loads(choice.text), SCHEMAS["nested"])


def test_a_repeated_prompt_from_the_prefix_cache_is_constrained_too(smollm2_llm):
    regex = StructuredOutput(kind="regex", spec=r"[a-z]{3,6}-\d{2}", param="structured_outputs.regex")
    params = SamplingParams(temperature=0, max_tokens=20, structured=regex, logprobs=2)
    prompt = "The code word of the day, long enough to fill more than one block of the cache, is"
    first, second = smollm2_llm.generate([prompt, prompt], params)
    assert second.outputs[0].text == first.outputs[0].text
    assert re.fullmatch(r"[a-z]{3,6}-\d{2}", first.outputs[0].text)
    # logprobs are the masked distribution's: the first token's alternatives can only open the regex
    alternatives = [t for t, lp in first.outputs[0].logprobs[0].top if math.isfinite(lp)]
    assert alternatives and all(re.match(r"[a-z]", smollm2_llm.tokenizer.decode([t])) for t in alternatives)


@pytest.mark.parametrize(
    ("constraint", "message"),
    [
        (StructuredOutput(kind="json", spec='{"type": "objectx"}'), "objectx"),
        (StructuredOutput(kind="json", spec="{not json"), "not a valid constraint"),
        (
            StructuredOutput(kind="regex", spec="(", param="structured_outputs.regex"),
            "not a valid constraint",
        ),
        (
            StructuredOutput(kind="grammar", spec="root ::= nothing", param="structured_outputs.grammar"),
            "nothing",
        ),
    ],
)
def test_a_constraint_that_cannot_compile_is_refused_naming_its_field(smollm2_llm, constraint, message):
    with pytest.raises(SamplingParamsError, match=message) as e:
        smollm2_llm.generate(["Hi"], SamplingParams(max_tokens=4, structured=constraint))
    assert e.value.param == constraint.param
    assert not smollm2_llm.engine.has_unfinished()


def test_a_request_aborted_while_it_compiles_leaves_nothing(smollm2_llm):
    engine = smollm2_llm.engine
    schema = {"type": "object", "properties": {f"k{i}": {"type": "string"} for i in range(40)}}
    engine.add_request(
        "aborted",
        [1, 2, 3],
        SamplingParams(structured=StructuredOutput(kind="json", spec=json.dumps(schema))),
    )
    engine.abort("aborted")
    while engine.has_unfinished():
        assert engine.step() == []
    assert (
        engine.pop_rejected() == []
        and engine.block_manager.num_free_blocks == engine.block_manager.num_blocks
    )


def test_masks_filled_on_worker_threads_equal_masks_filled_in_turn(smollm2_llm):
    """Forty sequences at different points of their grammars (every third one unconstrained)."""
    from pyinfer.engine.sequence import Sequence
    from pyinfer.engine.structured_output import MaskFiller

    engine = smollm2_llm.engine
    compiled = engine.grammars.submit(JSON).result()
    written = '{"user": {"id": 123, "email": "abc'
    seqs = []
    for i in range(40):
        seq = Sequence(f"mask-{i}", 0, [1, 2, 3], SamplingParams(), max_len=64)
        if i % 3:
            seq.grammar = engine.grammars.matcher(compiled)
            assert seq.grammar.accept_string(written[: i % len(written)])
        seqs.append(seq)
    vocab = engine.runner.vocab_size
    threaded = MaskFiller(vocab, threads=4).fill(seqs)
    in_turn = MaskFiller(vocab, threads=1).fill(seqs)
    assert threaded is not None and threaded.equal(in_turn)
    assert (threaded[0::3] == -1).all() and not (threaded[1] == -1).all()


def test_overlapped_steps_give_what_steps_in_turn_give_constrained_or_not(smollm2_llm):
    """The GPU's overlapped scheduling (the next step launched before this one's ids reach the host, a
    grammar's token taken while the next forward runs) on the CPU's engine: the same greedy replies."""
    engine = smollm2_llm.engine
    schema = SCHEMAS["nested"]
    prompts = ["A user record as JSON.", "Name three colours.", "Another user record, as JSON.", "Hello!"]
    params = [
        SamplingParams(temperature=0, max_tokens=40, structured=JSON if i % 2 == 0 else None)
        for i in range(len(prompts))
    ]
    conversations = [[{"role": "user", "content": p}] for p in prompts]
    in_turn = [r.outputs[0].text for r in smollm2_llm.chat(conversations, params)]
    engine.overlap = True
    try:
        overlapped = [r.outputs[0].text for r in smollm2_llm.chat(conversations, params)]
    finally:
        engine.overlap = False
    assert overlapped == in_turn
    for text in overlapped[0::2]:
        jsonschema.validate(json.loads(text), schema)
