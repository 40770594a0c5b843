"""Constrained decoding in the engine: every choice of n follows the grammar, through preemption, prefix
caching and logprobs; a constraint that cannot compile is refused naming its field; a request aborted
while its grammar compiles leaves nothing behind."""

from __future__ import annotations

import gc
import json
import math
import os
import re
from collections.abc import Iterator

import jsonschema
import pytest
import torch

from pyinfer import SamplingParams
from pyinfer.engine.grammar_bank import with_json_whitespace_bound
from pyinfer.engine.grammar_links import MaskBuffers
from pyinfer.engine.llm import LLM
from pyinfer.engine.sequence import Sequence
from pyinfer.engine.structured_output import Grammars
from pyinfer.sampling_params import SamplingParamsError, StructuredOutput
from pyinfer.server.tool_formats import FORMATS
from pyinfer.server.tool_grammar import structural_tag
from tests.server.structured_schemas import SCHEMAS

JSON = StructuredOutput(kind="json", spec=json.dumps(SCHEMAS["nested"]))
# two JSON requests beside two unconstrained ones, greedy
MIXED = [
    [{"role": "user", "content": p}]
    for p in ("A user record as JSON.", "Name three colours.", "Another user record, as JSON.", "Hello!")
]
MIXED_PARAMS = [
    SamplingParams(temperature=0, max_tokens=40, structured=JSON if i % 2 == 0 else None)
    for i in range(len(MIXED))
]


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
    alternatives = [t for t, _ in first.outputs[0].logprobs[0].top]
    assert alternatives and all(re.match(r"[a-z]", smollm2_llm.tokenizer.decode([t])) for t in alternatives)


def test_tokens_a_constraint_forbids_are_left_out_of_the_top_logprobs(smollm2_llm):
    """A forbidden token's logprob is -inf, which JSON cannot carry (it went out as null, which the
    SDKs' float fields do not take): the list holds the allowed tokens only, fewer than asked."""
    only = StructuredOutput(kind="regex", spec="ok", param="structured_outputs.regex")
    params = SamplingParams(temperature=0, max_tokens=5, structured=only, logprobs=5)
    (result,) = smollm2_llm.generate(["Say ok:"], params)
    assert result.outputs[0].text == "ok"
    for step in result.outputs[0].logprobs:
        assert 1 <= len(step.top) < 5 and all(math.isfinite(lp) for _, lp in step.top)


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


@pytest.fixture(scope="module")
def workers_llm() -> Iterator[LLM]:
    """The embedded model with its grammars in two worker processes, as a GPU's engine keeps them."""
    llm = LLM(dtype="float32", device="cpu", max_num_seqs=16, kv_cache_memory_gb=0.5, grammar_workers=2)
    yield llm
    llm.engine.close()


def _attached(
    grammars: Grammars,
    tokenizer,
    seqs: list[Sequence],
    prefixes: list[str | None],
    constraint: StructuredOutput = JSON,
) -> None:
    """The sequences given the constraint's matchers, moved through their prefixes (None: unconstrained)."""
    constrained = [seq for seq, prefix in zip(seqs, prefixes, strict=True) if prefix is not None]
    compilation = grammars.submit(constraint, len(constrained))
    while not compilation.future.done():
        grammars.poll(timeout=0.1)
    compilation.future.result()
    grammars.attach(compilation, constrained)
    for seq, prefix in zip(seqs, prefixes, strict=True):
        for token in tokenizer.encode(prefix or ""):
            grammars.accept(seq, token)


def _masks_of(
    grammars: Grammars, tokenizer, prefixes: list[str | None], constraint: StructuredOutput = JSON
) -> torch.Tensor | None:
    """One step's masks for sequences at these points of the constraint's grammar (None: unconstrained)."""
    seqs = [Sequence(f"mask-{i}", 0, [1, 2, 3], SamplingParams(), max_len=64) for i in range(len(prefixes))]
    _attached(grammars, tokenizer, seqs, prefixes, constraint)
    grammars.dispatch(seqs)
    masks = grammars.collect()
    return None if masks is None else masks.clone()


def test_masks_filled_by_worker_processes_equal_masks_filled_in_process(smollm2_llm):
    """Forty sequences at different points of their grammars (every third one unconstrained), in two
    banks of two processes against one bank here; then no sequence constrained: no mask."""
    engine, tokenizer = smollm2_llm.engine, smollm2_llm.tokenizer
    written = '{"user": {"id": 123, "email": "abc'
    prefixes = [None if i % 3 == 0 else written[: i % len(written)] for i in range(40)]
    here, there = engine.new_grammars(0, max_rows=48), engine.new_grammars(2, max_rows=48)
    try:
        in_process = _masks_of(here, tokenizer, prefixes)
        in_workers = _masks_of(there, tokenizer, prefixes)
        assert in_workers is not None and in_workers.equal(in_process)
        assert (in_workers[0::3] == -1).all() and not (in_workers[1] == -1).all()
        assert {len(rows) for rows in there._accepts} == {0}  # every bank had rows: all sent
        assert _masks_of(there, tokenizer, [None, None]) is None
    finally:
        here.close()
        there.close()


@pytest.mark.parametrize("kind", ["json", "tool call"])
def test_json_whitespace_between_tokens_is_bounded_by_the_constraint_or_the_engine(
    smollm2_llm, kind, monkeypatch
):
    """Inside a JSON reply or a tool call's arguments, at most max_whitespace characters of whitespace
    between two tokens: the engine's --max-json-whitespace (here 2) where the constraint sets none."""
    engine, tokenizer = smollm2_llm.engine, smollm2_llm.tokenizer
    monkeypatch.setattr(engine.config, "max_json_whitespace", 2)
    if kind == "json":
        spec, text = json.dumps(SCHEMAS["nested"]), '{"user": {"id": 1}}'
    else:
        function = {"name": "f", "parameters": {"type": "object", "properties": {"id": {"type": "integer"}}}}
        hermes = FORMATS["hermes"]
        spec = structural_tag(hermes, [function], "required", False)
        text = hermes.write_calls([("f", {"id": 1})])
    prefix = text[: text.index('{"', 1) if kind == "json" else text.index('{"id"')] + "{"
    one, two = (tokenizer.hf.convert_tokens_to_ids(t) for t in ("\u0120", "\u0120\u0120"))  # " ", "  "
    grammars = engine.new_grammars(0, max_rows=4)
    try:
        allowed = {}
        for bound in (None, 1):
            constraint = StructuredOutput(
                kind="json" if kind == "json" else "structural_tag", spec=spec, max_whitespace=bound
            )
            masks = _masks_of(grammars, tokenizer, [prefix, prefix + " "], constraint)
            allowed[bound] = [[bool(row[t // 32] >> (t % 32) & 1) for t in (one, two)] for row in masks]
    finally:
        grammars.close()
    assert allowed[None] == [[True, True], [True, False]]
    assert allowed[1] == [[True, False], [False, False]]


def test_a_tool_schema_s_data_is_left_as_the_client_wrote_it():
    """The bound goes on the tag's JSON contents, not into the client's schema: a `const` that looks like a
    content is data."""
    function = {
        "name": "f",
        "parameters": {"type": "object", "properties": {"x": {"const": {"type": "json_schema"}}}},
    }
    tag = json.loads(
        with_json_whitespace_bound(structural_tag(FORMATS["hermes"], [function], "required", False), 3)
    )
    contents = [node for node in _dicts(tag) if node.get("type") == "json_schema" and "json_schema" in node]
    assert [content["max_whitespace_cnt"] for content in contents] == [3]
    assert contents[0]["json_schema"]["properties"]["x"] == {"const": {"type": "json_schema"}}


def _dicts(node) -> Iterator[dict]:
    if isinstance(node, dict):
        yield node
        node = list(node.values())
    if isinstance(node, list):
        for item in node:
            yield from _dicts(item)


def test_a_step_cut_short_is_not_taken_for_the_next(smollm2_llm):
    """A step dispatched to a worker and never collected (an error between the two): the next step's
    masks are the next step's, not the late reply to the first."""
    engine, tokenizer = smollm2_llm.engine, smollm2_llm.tokenizer
    written = '{"user": {"id": 123, "email": "abc'
    second = [written[: i % 7] for i in range(40)]
    here, there = engine.new_grammars(0, max_rows=48), engine.new_grammars(1, max_rows=48)
    try:
        expected = _masks_of(here, tokenizer, second)
        seqs = [Sequence(f"cut-{i}", 0, [1, 2, 3], SamplingParams(), max_len=64) for i in range(70)]
        _attached(there, tokenizer, seqs, [written[: i + 1] for i in range(30)] + second)
        there.dispatch(seqs[:30])  # never collected
        there.dispatch(seqs[30:])
        assert there.collect().equal(expected)
    finally:
        here.close()
        there.close()


def test_grammar_workers_give_what_the_engine_process_gives(smollm2_llm, workers_llm):
    """The same greedy replies, constrained or not, at once and with overlapped steps; every matcher
    is let go once its sequence is done, and a bad constraint is refused naming its field."""
    expected = [r.outputs[0].text for r in smollm2_llm.chat(MIXED, MIXED_PARAMS)]
    engine = workers_llm.engine
    assert [r.outputs[0].text for r in workers_llm.chat(MIXED, MIXED_PARAMS)] == expected
    engine.overlap = True
    try:
        assert [r.outputs[0].text for r in workers_llm.chat(MIXED, MIXED_PARAMS)] == expected
    finally:
        engine.overlap = False
    assert engine.grammars._load == [0, 0]  # every matcher let go, and every promise kept
    bad = StructuredOutput(kind="regex", spec="(", param="structured_outputs.regex")
    with pytest.raises(SamplingParamsError, match="not a valid constraint") as e:
        workers_llm.generate(["Hi"], SamplingParams(max_tokens=4, structured=bad))
    assert e.value.param == "structured_outputs.regex" and not engine.has_unfinished()
    # the constraint crosses to the worker whole: strict, a schema the grammar cannot enforce is refused;
    # not strict, it is served
    tags = '{"type": "array", "items": {"type": "integer"}, "maxItems": 2, "uniqueItems": true}'
    with pytest.raises(SamplingParamsError, match="uniqueItems") as e:
        workers_llm.generate(
            ["Hi"], SamplingParams(max_tokens=4, structured=StructuredOutput(kind="json", spec=tags))
        )
    assert e.value.param == "response_format" and not engine.has_unfinished()
    lenient = StructuredOutput(kind="json", spec=tags, strict=False)
    assert workers_llm.generate(["Hi"], SamplingParams(max_tokens=4, structured=lenient))[0].outputs
    assert engine.stats()["grammar_compile_seconds"] > 0


def test_matchers_of_a_request_gone_before_it_sampled_are_let_go(smollm2_llm):
    """Aborted once its grammar compiled and its three choices were given matchers, before any step:
    the matchers are made and forgotten with the bank's next step."""
    engine = smollm2_llm.engine
    engine.add_request("gone", [1, 2, 3], SamplingParams(n=3, max_tokens=4, structured=JSON))
    while engine._compiling:
        engine._admit_compiled()
    engine.abort("gone")
    smollm2_llm.generate(["Hi"], SamplingParams(max_tokens=4, structured=JSON))
    assert len(engine.grammars._links[0].bank) == 1  # the last request's matcher, dropped with the next step
    assert engine.grammars._load == [0]


def test_warm_up_puts_a_constrained_request_through_every_grammar_worker(workers_llm):
    """Each worker has started and compiled before the server is ready, not beside a client's first
    requests; the warm-up leaves no matcher, request or count behind."""
    engine = workers_llm.engine
    before = [link.compile_seconds for link in engine.grammars._links] or [0.0, 0.0]
    engine.warm_up()
    after = [link.compile_seconds for link in engine.grammars._links]
    assert len(after) == 2 and all(a > b for a, b in zip(after, before, strict=True))
    assert engine.grammars._load == [0, 0] and not engine.has_unfinished()
    assert engine.num_constrained_requests == 0 and engine.pop_rejected() == []
    assert engine.stats()["grammar_compile_seconds"] == 0  # the warm-up's compiles are not clients'


def _is_masks_fd(fd: int) -> bool:
    try:
        return "pyinfer-grammar-masks" in os.readlink(f"/proc/self/fd/{fd}")
    except OSError:  # closed, and not reused since
        return False


def test_mask_buffers_let_go_of_their_memory_only_once_no_view_holds_it():
    """A view taken before close stays readable (the map goes with its last tensor); the memfd is
    closed by close, or when the buffers are dropped unclosed."""
    closed = MaskBuffers(4, pin=False, shared_rows=8)
    view = closed.next(2)
    view.fill_(7)
    memfd = closed.memfd
    closed.close()
    assert view.sum().item() == 7 * 2 * 4 and not _is_masks_fd(memfd)
    dropped = MaskBuffers(4, pin=False, shared_rows=8)
    memfd = dropped.memfd
    assert _is_masks_fd(memfd)
    del dropped
    gc.collect()
    assert not _is_masks_fd(memfd)


def test_a_grammar_worker_that_dies_fails_the_step_naming_it():
    llm = LLM(dtype="float32", device="cpu", max_num_seqs=4, kv_cache_memory_gb=0.25, grammar_workers=1)
    try:
        llm.engine.grammars._ready.result(timeout=60)  # the worker started
        worker = llm.engine.grammars._links[0]
        worker.proc.kill()
        worker.proc.wait()
        params = SamplingParams(temperature=0, max_tokens=8, structured=JSON)
        with pytest.raises(RuntimeError, match=r"grammar worker 0 .* died"):
            llm.generate(["A user record as JSON."], params)
    finally:
        llm.engine.close()


def test_overlapped_steps_give_what_steps_in_turn_give_constrained_or_not(smollm2_llm):
    """The GPU's overlapped scheduling (the next step launched before this one's ids reach the host, a
    grammar's token taken while the next forward runs) on the CPU's engine: the same greedy replies."""
    engine = smollm2_llm.engine
    schema = SCHEMAS["nested"]
    in_turn = [r.outputs[0].text for r in smollm2_llm.chat(MIXED, MIXED_PARAMS)]
    engine.overlap = True
    try:
        overlapped = [r.outputs[0].text for r in smollm2_llm.chat(MIXED, MIXED_PARAMS)]
    finally:
        engine.overlap = False
    assert overlapped == in_turn
    for text in overlapped[0::2]:
        jsonschema.validate(json.loads(text), schema)


def test_a_length_bounded_string_stays_json_when_the_model_wants_a_raw_tab(smollm2_llm):
    # a raw tab pushed to the top of every step: xgrammar's own length rule would let it into the string
    (tab,) = smollm2_llm.tokenizer.encode("\t", add_special_tokens=False)
    schema = {"type": "object", "properties": {"s": {"type": "string", "maxLength": 8}}, "required": ["s"]}
    params = SamplingParams(
        temperature=0,
        max_tokens=40,
        logit_bias={tab: 100.0},
        structured=StructuredOutput(kind="json", spec=json.dumps(schema)),
    )
    (result,) = smollm2_llm.generate(["A JSON object:"], params)
    jsonschema.validate(json.loads(result.outputs[0].text), schema)
