"""A GGUF's tokenizer, converted once by transformers, is kept and read back the same on later starts."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import transformers

from pyinfer.tokenizer import Tokenizer, tokenizer_cache_dir

TEXTS = [
    "Hello world!",
    "  leading spaces\n\nnew\tlines",
    "unicode ✓ 日本語 🎉",
    "<|im_start|>user\nhi<|im_end|>",
    '{"a": [1, 2], "b": "}{"}',
]
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]
TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]


@pytest.fixture(scope="module")
def converted(tmp_path_factory, smollm2_path) -> Iterator[tuple[Tokenizer, list[str]]]:
    """The embedded model's tokenizer converted once into an empty cache, and the list of every
    tokenizer load from a GGUF file (a conversion) since."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        conversions: list[str] = []
        load = transformers.AutoTokenizer.from_pretrained

        def counting(path, *args, **kwargs):
            if kwargs.get("gguf_file"):
                conversions.append(kwargs["gguf_file"])
            return load(path, *args, **kwargs)

        patch.setattr(transformers.AutoTokenizer, "from_pretrained", counting)
        yield Tokenizer(smollm2_path), conversions


def _same(ours: Tokenizer, theirs: Tokenizer) -> None:
    for text in TEXTS:
        ids = ours.encode(text)
        assert theirs.encode(text) == ids
        assert theirs.decode(ids) == ours.decode(ids)
        assert theirs.decode(ids, skip_special_tokens=False) == ours.decode(ids, skip_special_tokens=False)
    assert theirs.render_chat(MESSAGES) == ours.render_chat(MESSAGES)
    assert theirs.render_chat(MESSAGES, TOOLS) == ours.render_chat(MESSAGES, TOOLS)
    assert theirs.hf.all_special_tokens == ours.hf.all_special_tokens and len(theirs.hf) == len(ours.hf)
    assert (theirs._decode == theirs.hf.decode) == (ours._decode == ours.hf.decode)  # the same decode path


def test_the_converted_tokenizer_is_kept_and_read_back_the_same(converted, smollm2_path):
    first, conversions = converted
    (kept,) = tokenizer_cache_dir().iterdir()
    assert conversions == [Path(smollm2_path).name] and (kept / "tokenizer.json").exists()
    again = Tokenizer(smollm2_path)
    assert len(conversions) == 1  # read from the kept folder
    _same(first, again)


def test_a_damaged_copy_is_converted_again_and_replaced(converted, smollm2_path):
    first, conversions = converted
    Tokenizer(smollm2_path)  # kept, whichever test ran first
    before = len(conversions)
    (kept,) = tokenizer_cache_dir().iterdir()
    (kept / "tokenizer.json").write_text("{")
    again = Tokenizer(smollm2_path)
    assert len(conversions) == before + 1
    (replaced,) = tokenizer_cache_dir().iterdir()  # no staged or discarded folder left beside it
    json.loads((replaced / "tokenizer.json").read_text())
    _same(first, again)
