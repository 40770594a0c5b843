"""Tokenizer and chat template via transformers, from a Hugging Face folder or a GGUF file's metadata."""

from __future__ import annotations

import functools
import hashlib
import inspect
import logging
import os
import re
import secrets
import shutil
import tempfile
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import jinja2

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TemplateOptions:
    """How a conversation is rendered: a turn for the reply opened (the default), or the last assistant
    message left open for the model to continue; `variables` go to the template (e.g. enable_thinking)."""

    add_generation_prompt: bool = True
    continue_final_message: bool = False
    variables: dict[str, Any] = field(default_factory=dict)


DEFAULT_TEMPLATE = TemplateOptions()
NAME_PROBE = "pyinfer_name_probe"  # a participant's name no template writes unless it writes names
NAME_PROBE_TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
# For each role whose messages may carry a name: a conversation that names it
PROBED_ROLES = {
    "system": [{"role": "system", "content": "S", "name": NAME_PROBE}, {"role": "user", "content": "U"}],
    "user": [{"role": "user", "content": "U", "name": NAME_PROBE}],
    "assistant": [
        {"role": "user", "content": "U"},
        {"role": "assistant", "content": "A", "name": NAME_PROBE},
    ],
}


class TemplateVariableClash(ValueError):
    """TemplateOptions.variables names one of the template's own arguments."""


def _direct_decode(hf: Any) -> Any:
    """The Rust tokenizer's own decode where transformers' adds nothing to it (no clean-up of spaces, no
    class of its own overriding decoding): transformers' costs several microseconds more a call, and
    streaming decodes twice a token. None where it would differ."""
    backend = getattr(hf, "backend_tokenizer", None)
    if backend is None or getattr(hf, "clean_up_tokenization_spaces", False):
        return None
    generic = next((c for c in type(hf).__mro__ if c.__name__ == "TokenizersBackend"), None)
    if generic is None or type(hf)._decode is not generic._decode or type(hf).decode is not generic.decode:
        return None
    return backend.decode


# Held while a thread loads a tokenizer or imports what does (xgrammar): transformers' lazy imports fail
# ("cannot import name") when two threads race through them, as an engine's grammar thread and its
# LLM's tokenizer load did
IMPORT_LOCK = threading.RLock()


def shown_token(token: bytes) -> str:
    """A token's bytes as logprobs show them: bytes that are not whole UTF-8 characters (a piece of an
    emoji) written as `\\xf0`, so that tokens stay told apart."""
    return token.decode("utf-8", errors="backslashreplace")


class Tokenizer:
    def __init__(self, path: str):
        p = Path(path)
        with IMPORT_LOCK:
            from transformers import AutoTokenizer

            if p.is_file() and p.suffix == ".gguf":
                self.hf = _gguf_tokenizer(p)
            else:
                self.hf = AutoTokenizer.from_pretrained(str(p if p.is_dir() else p.parent))
        self.has_chat_template = bool(getattr(self.hf, "chat_template", None))
        self._decode = _direct_decode(self.hf) or self.hf.decode

    @property
    def vocab_size(self) -> int:
        return len(self.hf)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self.hf.encode(text, add_special_tokens=add_special_tokens)

    def decode(self, token_ids: list[int], skip_special_tokens: bool = True) -> str:
        return self._decode(token_ids, skip_special_tokens=skip_special_tokens)

    def is_skipped_special(self, text: str) -> bool:
        """Whether `text` is one special token that decoding with skip_special_tokens drops."""
        ids = self.hf.encode(text, add_special_tokens=False)
        return len(ids) == 1 and text not in self.hf.decode(ids, skip_special_tokens=True)

    def token_text(self, token_id: int) -> str:
        """The text of one token as OpenAI logprobs show it (see shown_token)."""
        return shown_token(self.token_bytes(token_id))

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes one token adds to the text, which decoding it alone turns into U+FFFD where they
        are part of a character."""
        added = self._added_bytes.get(token_id)
        if added is not None:
            return added
        piece = self.hf.convert_ids_to_tokens(token_id)
        kind, table = self._vocabulary_kind
        if kind == "byte_level":
            try:
                return bytes(table[c] for c in piece)
            except KeyError:  # not spelled in byte-level stand-ins after all
                return piece.encode()
        if kind == "byte_fallback":
            if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
                return bytes([int(piece[3:5], 16)])
            return piece.replace("\u2581", " ").encode()
        return self.hf.decode([token_id]).encode()

    @functools.cached_property
    def special_ids(self) -> frozenset[int]:
        """The special tokens, whose text decoding with skip_special_tokens leaves out."""
        return frozenset(i for i, t in self.hf.added_tokens_decoder.items() if t.special)

    @functools.cached_property
    def max_token_chars(self) -> int:
        """The most characters of text one token can stand for: the longest piece of the vocabulary
        (a byte-level piece has a character for each byte, a SentencePiece one for each character)."""
        return max(map(len, self.hf.get_vocab()))

    @functools.cached_property
    def _added_bytes(self) -> dict[int, bytes]:
        """The added tokens' text (transformers builds its map of them anew at each look-up)."""
        return {i: t.content.encode() for i, t in self.hf.added_tokens_decoder.items()}

    @functools.cached_property
    def _vocabulary_kind(self) -> tuple[str, dict[str, int]]:
        """How the vocabulary spells bytes: "byte_level" (GPT-2's printable stand-ins, with the map back),
        "byte_fallback" (SentencePiece's `<0xAB>` pieces), or "text" (pieces are text)."""
        backend = getattr(self.hf, "backend_tokenizer", None)
        found = backend.decoder if backend is not None else None
        decoder = found.__getstate__().decode() if found is not None else ""  # its JSON, with any it chains
        if '"ByteLevel"' in decoder:
            from transformers.convert_slow_tokenizer import bytes_to_unicode

            return "byte_level", {c: b for b, c in bytes_to_unicode().items()}
        if '"ByteFallback"' in decoder:
            return "byte_fallback", {}
        return "text", {}

    def render_chat(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        options: TemplateOptions = DEFAULT_TEMPLATE,
    ) -> str:
        """The prompt text; `tools` (OpenAI's chat shape) for templates that render them."""
        if not self.has_chat_template:
            raise ValueError("this model has no chat template: use the completions API with a plain prompt")
        if options.continue_final_message and options.add_generation_prompt:
            raise ValueError("continue_final_message and add_generation_prompt cannot both be true")
        if options.continue_final_message and (not messages or messages[-1]["role"] != "assistant"):
            raise ValueError("continue_final_message needs an assistant message last")
        # the template's own arguments: apply_chat_template's, and the messages it renders under that name
        taken = {*inspect.signature(self.hf.apply_chat_template).parameters, "messages"}
        if clash := sorted(taken & set(options.variables)):
            raise TemplateVariableClash(f"chat_template_kwargs may not set {', '.join(clash)}")
        try:
            return self._render([self._name_said(m, tools is not None) for m in messages], tools, options)
        except (TypeError, KeyError, IndexError) as e:  # the template's own code, on what it was given
            raise ValueError(f"the chat template could not render these messages: {e}") from None

    def _render(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, options: TemplateOptions
    ) -> str:
        return self.hf.apply_chat_template(
            messages,
            tools=tools,
            tokenize=False,
            add_generation_prompt=options.add_generation_prompt,
            continue_final_message=options.continue_final_message,
            **options.variables,
        )

    def _name_said(self, message: dict[str, Any], with_tools: bool) -> dict[str, Any]:
        """A participant's `name` (OpenAI's way to tell participants of one role apart) where the template
        does not write it for the message's role: before the content, as `name: content`, so that the
        model is told it all the same."""
        name, role, content = message.get("name"), message["role"], message.get("content")
        if not name or role not in PROBED_ROLES or not content:
            return message  # (an assistant's calls alone have no content to put it before)
        if role in (self.roles_named_with_tools if with_tools else self.roles_named):
            return message
        said = {k: v for k, v in message.items() if k != "name"}  # a template may refuse names it lacks
        return said | {"content": f"{name}: {content}"}

    @functools.cached_property
    def roles_named(self) -> frozenset[str]:
        """The roles whose message `name` the chat template writes into the prompt."""
        return self._probe_names(None)

    @functools.cached_property
    def roles_named_with_tools(self) -> frozenset[str]:
        """The same where tools are given, which a template may render by another of its variants."""
        return self._probe_names(NAME_PROBE_TOOLS)

    def _probe_names(self, tools: list[dict[str, Any]] | None) -> frozenset[str]:
        """The roles whose name comes out of a conversation that names each (in any case: a template
        may write it upper-cased)."""
        named = set()
        for role, conversation in PROBED_ROLES.items():
            try:
                if NAME_PROBE in self._render(conversation, tools, DEFAULT_TEMPLATE).lower():
                    named.add(role)
            except Exception:  # the template refused this conversation: it writes no name of this role
                log.debug("the chat template refused a named %s message", role, exc_info=True)
        return frozenset(named)

    def compile_chat_template(self) -> None:
        """Render a one-line conversation, so that transformers compiles and caches the template now
        rather than at a client's first chat request, with the event loop held; and find which roles'
        names it writes."""
        if not self.has_chat_template:
            return
        try:
            self.render_chat([{"role": "user", "content": "Hello"}])
        except jinja2.TemplateSyntaxError as e:
            log.warning("the chat template does not compile, so chat requests will fail: %s", e)
            return
        except (ValueError, jinja2.TemplateError) as e:  # refused this conversation, compiled all the same
            log.debug("the chat template refused a one-line conversation: %s", e)
        unnamed = sorted(PROBED_ROLES.keys() - (self.roles_named & self.roles_named_with_tools))
        if unnamed:
            log.info(
                "the chat template does not always write the names of %s messages: there a name goes "
                "before the content",
                unnamed,
            )

    def encode_chat(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        options: TemplateOptions = DEFAULT_TEMPLATE,
    ) -> list[int]:
        """The prompt's tokens. A special token's text in the messages, the tools or the template's
        variables is tokenized as text: the template's markup is the only control token, so a user
        cannot close their turn and open a system one by writing `<|im_end|>`."""
        masks = _SpecialMasks(self._special_pattern)
        masked_messages, masked_tools = masks.apply(messages), masks.apply(tools)
        masked_options = replace(options, variables=masks.apply(options.variables))  # chat_template_kwargs
        if not masks.texts:  # the common case: tokenized whole, as transformers would
            return self.encode(self.render_chat(messages, tools, options), add_special_tokens=False)
        # The template already holds BOS and other special tokens.
        pieces = masks.pattern.split(self.render_chat(masked_messages, masked_tools, masked_options))
        ids: list[int] = []
        for i, piece in enumerate(pieces):  # template text, then a masked text's index, in turn
            if i % 2 == 0:
                ids += self.encode(piece, add_special_tokens=False)
            else:
                ids += self._text_only_backend.encode(masks.texts[int(piece)], add_special_tokens=False).ids
        return ids

    @functools.cached_property
    def _special_pattern(self) -> re.Pattern[str] | None:
        """Any special token's text (the longest first, where one begins another)."""
        texts = sorted({self._added_bytes[i].decode() for i in self.special_ids}, key=len)
        return re.compile("|".join(map(re.escape, reversed(texts)))) if texts else None

    @functools.cached_property
    def _text_only_backend(self) -> Any:
        """A copy of the tokenizer that reads special tokens' text as text (the setting is the backend's
        own state, so the shared one is left alone: other threads tokenize with it)."""
        from tokenizers import Tokenizer as Backend

        backend = Backend.from_str(self.hf.backend_tokenizer.to_str())
        backend.encode_special_tokens = True
        return backend


class _SpecialMasks:
    """Special tokens' text in a client's strings, each replaced by a mark of letters and digits that
    templates leave as it is (even through tojson), to be found again in the rendered prompt."""

    def __init__(self, special: re.Pattern[str] | None):
        self.special = special
        self.texts: list[str] = []  # what each mark stands for, by its number
        nonce = secrets.token_hex(8)
        self.pattern = re.compile(f"PYINFERMASK{nonce}N([0-9]+)E")
        self._mark = f"PYINFERMASK{nonce}N{{}}E"

    def apply(self, value: Any) -> Any:
        """`value` (JSON-like) with every string's special-token text masked."""
        if isinstance(value, str):
            return value if self.special is None else self.special.sub(self._masked, value)
        if isinstance(value, dict):
            return {key: self.apply(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self.apply(item) for item in value]
        return value

    def _masked(self, match: re.Match[str]) -> str:
        self.texts.append(match.group())
        return self._mark.format(len(self.texts) - 1)


def tokenizer_cache_dir() -> Path:
    """Where GGUF tokenizers converted once are kept: ~/.cache/pyinfer/tokenizers ($XDG_CACHE_HOME's)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pyinfer" / "tokenizers"


# Files beside a GGUF that transformers reads into its tokenizer too: a change to one is a new tokenizer
GGUF_SIBLINGS = (
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "chat_template.json",
)
PROBE = 'Hello, world! {"a": [1, 2]}\n\tünïcödé 🎉'  # a kept copy must encode this as the conversion did


def _gguf_tokenizer(path: Path) -> Any:
    """A GGUF's tokenizer. transformers takes seconds to convert its vocabulary (bench/results/
    2026-12-06-cpu-session16.md), and every process of every start would: the result is kept as a
    tokenizer folder, under the files' identities and transformers' version, and read from there."""
    from transformers import AutoTokenizer

    cached = None
    try:
        cached = _kept_copy(path)
        if cached.is_dir():
            return AutoTokenizer.from_pretrained(str(cached))
    except Exception as e:  # no home, an unreadable cache, a damaged copy: converted again
        log.info("converting the GGUF tokenizer again (%s)", e)
    hf = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    if cached is not None:
        try:
            _keep(hf, cached)
        except Exception as e:  # a cache that fails must not fail the load
            log.info("the GGUF tokenizer is not kept for the next start: %s", e)
    return hf


def _kept_copy(path: Path) -> Path:
    """Where the tokenizer of the GGUF at `path` is kept: named after it, the files beside it that
    transformers reads too, and transformers' version."""
    import transformers

    identity = [str(path.resolve()), transformers.__version__]
    for file in (path, *(path.parent / name for name in GGUF_SIBLINGS)):
        if file.exists():
            st = file.stat()
            identity += [file.name, str(st.st_ino), str(st.st_size), str(st.st_mtime_ns)]
    return tokenizer_cache_dir() / hashlib.sha256("|".join(identity).encode()).hexdigest()[:32]


def _keep(hf: Any, cached: Path) -> None:
    """Saves `hf` where `cached` names, whole or not at all, once it reads back the same."""
    from transformers import AutoTokenizer

    if cached.is_dir():  # a copy that did not load: out of readers' way first, then deleted
        trash = Path(tempfile.mkdtemp(dir=cached.parent, prefix=".trash-"))
        os.rename(cached, trash / "copy")
        shutil.rmtree(trash, ignore_errors=True)
    cached.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(dir=cached.parent, prefix=".staged-"))
    try:
        hf.save_pretrained(staged)
        back = AutoTokenizer.from_pretrained(str(staged))
        same = (type(back), len(back), back.encode(PROBE), back.chat_template) == (
            type(hf),
            len(hf),
            hf.encode(PROBE),
            hf.chat_template,
        )
        if not same:
            raise ValueError("the saved copy reads back differently")
        os.rename(staged, cached)  # where a process that raced us got there first, its copy stays
    finally:
        shutil.rmtree(staged, ignore_errors=True)


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
