"""The per-choice output processing the server and the offline LLM share: an output of several tokens
(outputs that waited together) keeps none of those past a stop string, nor their logprobs."""

from __future__ import annotations

from pyinfer.detokenizer import IncrementalDetokenizer
from pyinfer.engine.messages import SeqOutput, TokenLogprob
from pyinfer.engine.outputs import ChoiceOutput
from pyinfer.tokenizer import load_tokenizer


def test_tokens_past_a_stop_string_in_one_output_are_not_the_reply_s(smollm2_path):
    tokenizer = load_tokenizer(smollm2_path, "gguf")
    ids = tokenizer.encode("One. Two. Three. Four.", add_special_tokens=False)
    stop_at = next(i for i in range(len(ids)) if "Two" in tokenizer.decode(ids[: i + 1]))
    choice = ChoiceOutput(0, IncrementalDetokenizer(tokenizer, stop=["Two"]))
    lps = [TokenLogprob(token_id=t, logprob=-0.5, top=[]) for t in ids]
    added = choice.add(SeqOutput(request_id="r", index=0, new_token_ids=ids, logprobs=lps))
    assert added.text == "One. " and added.stop_engine and choice.finish_reason == "stop"
    assert added.num_tokens == stop_at + 1 == choice.num_tokens  # up to the token that completed "Two"
    assert [lp.token_id for lp in added.logprobs] == ids[: stop_at + 1] == choice.token_ids
    assert choice.add(SeqOutput(request_id="r", index=0, new_token_ids=[5])) is None  # crossed the stop


def test_without_a_stop_string_every_token_counts_and_the_end_is_the_engine_s(smollm2_path):
    tokenizer = load_tokenizer(smollm2_path, "gguf")
    ids = tokenizer.encode("Hello there", add_special_tokens=False)
    choice = ChoiceOutput(0, IncrementalDetokenizer(tokenizer))
    first = choice.add(SeqOutput(request_id="r", index=0, new_token_ids=ids[:1]))
    last = choice.add(SeqOutput(request_id="r", index=0, new_token_ids=ids[1:], finish_reason="length"))
    assert first.text + last.text == "Hello there" and not last.stop_engine
    assert choice.num_tokens == len(ids) and choice.finish_reason == "length" and choice.logprobs is None
