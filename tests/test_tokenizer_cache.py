"""A GGUF's tokenizer, converted once by transformers, is kept and read back the same on later starts."""

from __future__ import annotations

import json
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


@pytest.fixture
def conversions(monkeypatch, tmp_path) -> list[str]:
    """An empty cache; each tokenizer load from a GGUF file (a conversion) is counted."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    counted: list[str] = []
    load = transformers.AutoTokenizer.from_pretrained

    def counting(path, *args, **kwargs):
        if kwargs.get("gguf_file"):
            counted.append(kwargs["gguf_file"])
        return load(path, *args, **kwargs)

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", counting)
    return counted


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


def test_the_converted_tokenizer_is_kept_and_read_back_the_same(conversions, smollm2_path):
    converted = Tokenizer(smollm2_path)
    (kept,) = tokenizer_cache_dir().iterdir()
    assert conversions == [Path(smollm2_path).name] and (kept / "tokenizer.json").exists()
    again = Tokenizer(smollm2_path)
    assert len(conversions) == 1  # read from the kept folder
    _same(converted, again)


def test_a_damaged_copy_is_converted_again_and_replaced(conversions, smollm2_path):
    converted = Tokenizer(smollm2_path)
    (kept,) = tokenizer_cache_dir().iterdir()
    (kept / "tokenizer.json").write_text("{")
    again = Tokenizer(smollm2_path)
    assert len(conversions) == 2
    json.loads((kept / "tokenizer.json").read_text())
    _same(converted, again)
