"""Incremental detokenization and stop strings, fed one token at a time as in streaming."""

from __future__ import annotations

import itertools
import random

import pytest

from pyinfer.detokenizer import IncrementalDetokenizer


@pytest.fixture(scope="module")
def tokenizer(smollm2_llm):
    return smollm2_llm.tokenizer


def stream(tokenizer, text: str, **kw) -> tuple[list[str], IncrementalDetokenizer]:
    ids = tokenizer.encode(text, add_special_tokens=False)
    detok = IncrementalDetokenizer(tokenizer, **kw)
    pieces = [detok.add([t], finished=i == len(ids) - 1) for i, t in enumerate(ids)]
    return pieces, detok


def test_streamed_pieces_join_to_the_full_text(tokenizer):
    text = "Héllo wörld — naïve café, 日本語 and emoji 🎉 done."
    pieces, _ = stream(tokenizer, text)
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)


def test_stop_string_across_token_boundaries(tokenizer):
    text = "The answer is forty-two, obviously. Then more text follows."
    pieces, detok = stream(tokenizer, text, stop=["two, obv"])
    assert "".join(pieces) == "The answer is forty-"
    assert detok.stopped_by == "two, obv"


def test_stop_string_included_when_asked(tokenizer):
    pieces, _ = stream(tokenizer, "alpha beta gamma delta", stop=["gamma"], include_stop_str=True)
    assert "".join(pieces) == "alpha beta gamma"


def test_no_partial_stop_string_is_ever_emitted(tokenizer):
    pieces, _ = stream(tokenizer, "one two three END four", stop=["END"])
    emitted = ""
    for p in pieces:
        emitted += p
        assert "E" not in emitted
    assert emitted == "one two three "


def test_decode_is_what_transformers_decodes(tokenizer):
    """Tokenizer.decode goes to the Rust tokenizer directly where transformers adds nothing to it: the same
    text for any ids, special ones and byte pieces of split characters included, skipped or not."""
    assert tokenizer._decode != tokenizer.hf.decode  # the direct path, for this tokenizer
    rng = random.Random(0)
    special = tokenizer.hf.all_special_ids
    vocab = tokenizer.vocab_size
    cases = [tokenizer.encode("naïve café — 東京 🙂 \n\t x  y"), special, [special[0], 100, special[-1], 200]]
    cases += [[rng.randrange(vocab) for _ in range(rng.randrange(1, 12))] for _ in range(300)]
    for ids in cases:
        for skip in (True, False):
            assert tokenizer.decode(ids, skip) == tokenizer.hf.decode(ids, skip_special_tokens=skip)


CALL = '<tool_call>\n{"name": "f", "arguments": {"city": "Paris"}}\n</tool_call>'


@pytest.mark.parametrize(
    ("text", "stop", "reply"),
    [
        ("Let me check.\n" + CALL, ["\n", "<", "Paris", '"'], None),  # nothing in the content
        ("Let me check.\n" + CALL, ["check"], "Let me "),
        ("line one\nline two " + CALL, ["\n"], "line one"),  # a newline of the content
        ("a < b, then " + CALL, ["<"], "a "),  # not a trigger's start after all
        ("a <tool_ca", ["<"], "a "),  # cut off: what was held is content
        ("the end\n", ["\n"], "the end"),  # whitespace at the end that no call followed
    ],
)
def test_stop_strings_apply_to_content_not_to_call_markup(tokenizer, text, stop, reply):
    pieces, detok = stream(tokenizer, text, stop=stop, markup=("<tool_call>",))
    assert "".join(pieces) == (text if reply is None else reply)
    assert (detok.stopped_by is None) == (reply is None)


@pytest.mark.parametrize("stop", [[], ["\n"]])
def test_call_markup_is_released_as_it_comes(tokenizer, stop):
    """No stop string applies past a trigger: nothing there is held back for one (a call streams)."""
    pieces, _ = stream(tokenizer, "Sure. " + CALL, stop=stop, markup=("<tool_call>",))
    assert "".join(pieces) == "Sure. " + CALL
    starts = itertools.accumulate((len(piece) for piece in pieces), initial=0)
    in_call = [piece for piece, at in zip(pieces, starts, strict=False) if piece and at > len("Sure. ")]
    assert len(in_call) > 10  # token by token, not all at the end
