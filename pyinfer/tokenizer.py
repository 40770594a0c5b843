"""Tokenizer and chat template via transformers, from a Hugging Face folder or a GGUF file's metadata."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


class Tokenizer:
    def __init__(self, path: str):
        from transformers import AutoTokenizer

        p = Path(path)
        if p.is_file() and p.suffix == ".gguf":
            self.hf = AutoTokenizer.from_pretrained(str(p.parent), gguf_file=p.name)
        else:
            self.hf = AutoTokenizer.from_pretrained(str(p if p.is_dir() else p.parent))
        self.has_chat_template = bool(getattr(self.hf, "chat_template", None))

    @property
    def vocab_size(self) -> int:
        return len(self.hf)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self.hf.encode(text, add_special_tokens=add_special_tokens)

    def decode(self, token_ids: list[int], skip_special_tokens: bool = True) -> str:
        return self.hf.decode(token_ids, skip_special_tokens=skip_special_tokens)

    def is_skipped_special(self, text: str) -> bool:
        """Whether `text` is one special token that decoding with skip_special_tokens drops."""
        ids = self.hf.encode(text, add_special_tokens=False)
        return len(ids) == 1 and text not in self.hf.decode(ids, skip_special_tokens=True)

    def token_text(self, token_id: int) -> str:
        """The text of one token as OpenAI logprobs show it."""
        return self.hf.decode([token_id])

    def render_chat(
        self,
        messages: list[dict[str, Any]],
        add_generation_prompt: bool = True,
        tools: list[dict[str, Any]] | None = None,
    ) -> str:
        """The prompt text; `tools` (OpenAI's chat shape) for templates that render them."""
        if not self.has_chat_template:
            raise ValueError("this model has no chat template: use the completions API with a plain prompt")
        return self.hf.apply_chat_template(
            messages, tools=tools, tokenize=False, add_generation_prompt=add_generation_prompt
        )

    def encode_chat(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
    ) -> list[int]:
        # The template already holds BOS and other special tokens.
        return self.encode(self.render_chat(messages, tools=tools), add_special_tokens=False)


TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")


def load_tokenizer(model_path: str, load_format: str, tokenizer_path: str | None = None) -> Tokenizer | None:
    """The model's tokenizer; None for a model folder without tokenizer files (random test models)."""
    path = tokenizer_path or model_path
    if load_format != "gguf" and tokenizer_path is None:
        folder = Path(path) if Path(path).is_dir() else Path(path).parent
        if not any((folder / f).exists() for f in TOKENIZER_FILES):
            return None
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return Tokenizer(path)
