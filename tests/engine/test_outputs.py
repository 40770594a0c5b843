"""The per-choice output processing the server and the offline LLM share: an output of several tokens
(outputs that waited together) keeps none of those past a stop string, nor their logprobs."""

from __future__ import annotations

from collections.abc import Iterator

from pyinfer.detokenizer import IncrementalDetokenizer
from pyinfer.engine.messages import SeqOutput, TokenLogprob
from pyinfer.engine.outputs import Added, ChoiceOutput
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


def _one_token_an_output(choice: ChoiceOutput, ids: list[int]) -> Iterator[Added]:
    """What the choice gives out as a stream sees it, one token (with its logprob) an output, until it
    ends at a stop string."""
    for t in ids:
        added = choice.add(
            SeqOutput(request_id="r", index=0, new_token_ids=[t], logprobs=[TokenLogprob(t, -1.0, [])])
        )
        if added is None:
            return
        yield added


def test_logprobs_come_with_their_text_and_stop_where_a_stop_string_cuts_it(smollm2_path):
    tokenizer = load_tokenizer(smollm2_path, "gguf")
    ids = tokenizer.encode("1\n2\n3\n4\n5\n6", add_special_tokens=False)
    choice = ChoiceOutput(0, IncrementalDetokenizer(tokenizer, stop=["3\n4"]))
    streamed_text, streamed_logprobs = "", []
    for added in _one_token_an_output(choice, ids):
        streamed_text += added.text
        streamed_logprobs += added.logprobs
        # never a token's logprob before its text: held back text ("3", "3\n") holds its tokens' too
        assert "".join(tokenizer.token_text(lp.token_id) for lp in streamed_logprobs) == streamed_text
    assert streamed_text == "1\n2\n" and choice.finish_reason == "stop"
    assert streamed_logprobs == choice.logprobs and len(choice.logprobs) < choice.num_tokens


def test_a_stop_string_kept_in_the_output_keeps_its_tokens_logprobs(smollm2_path):
    tokenizer = load_tokenizer(smollm2_path, "gguf")
    ids = tokenizer.encode("1\n2\n3\n4\n5\n6", add_special_tokens=False)
    choice = ChoiceOutput(0, IncrementalDetokenizer(tokenizer, stop=["3\n4"], include_stop_str=True))
    for _ in _one_token_an_output(choice, ids):
        pass
    assert "".join(tokenizer.token_text(lp.token_id) for lp in choice.logprobs) == "1\n2\n3\n4"


def test_a_token_s_bytes_are_its_own_where_it_holds_part_of_a_character(smollm2_path):
    tokenizer = load_tokenizer(smollm2_path, "gguf")
    text = "🐤🐞 ünï hi"
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert b"".join(tokenizer.token_bytes(t) for t in ids) == text.encode()
    partial = [t for t in ids if "\ufffd" in tokenizer.decode([t])]
    assert partial, "the emoji should need tokens that hold parts of a character"
    shown = [tokenizer.token_text(t) for t in partial]
    assert all("\\x" in s and "\ufffd" not in s for s in shown) and len(set(shown)) == len(set(partial))
    assert tokenizer.token_text(tokenizer.encode(" hi", add_special_tokens=False)[0]) == " hi"
    assert tokenizer.token_text(2) == "<|im_end|>"


def test_a_character_split_over_tokens_gives_their_logprobs_with_it(smollm2_path):
    tokenizer = load_tokenizer(smollm2_path, "gguf")
    ids = tokenizer.encode("a🐤\nb", add_special_tokens=False)
    text, given = "", b""
    for added in _one_token_an_output(ChoiceOutput(0, IncrementalDetokenizer(tokenizer, stop=["\n"])), ids):
        text += added.text
        given += b"".join(tokenizer.token_bytes(lp.token_id) for lp in added.logprobs)
        if added.logprobs:  # the bytes given so far make whole characters: the text given so far
            assert given.decode() == text
    assert text == "a🐤"


def test_a_token_of_no_text_before_a_cut_at_the_start_gives_no_other_token_s_logprob(smollm2_path):
    tokenizer = load_tokenizer(smollm2_path, "gguf")
    ids = [1, *tokenizer.encode("ab cd ef", add_special_tokens=False)]  # <|im_start|>: skipped, no text
    choice = ChoiceOutput(0, IncrementalDetokenizer(tokenizer, stop=["ab c"]))
    outputs = list(_one_token_an_output(choice, ids))
    assert "".join(a.text for a in outputs) == ""
    assert [lp.token_id for a in outputs for lp in a.logprobs] in ([], [1])
