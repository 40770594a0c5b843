"""xgrammar's side of constrained decoding for one model's vocabulary: constraints compiled (and cached)
into grammars, one matcher per sequence keyed by an integer, and a step's work on them: the tokens just
sampled accepted, then each constrained row's allowed next tokens written into a packed int32 bitmask.
A bank lives in the engine's process or in a grammar worker process (engine/grammar_worker.py)."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import torch

from pyinfer.sampling_params import SamplingParamsError, StructuredOutput
from pyinfer.schema_support import check_enforceable, for_grammar

CACHE_BYTES = 256 * 2**20  # xgrammar's cache of compiled grammars, for repeated constraints
# From this many rows xgrammar's batch matcher fills them in one C++ call; fewer are filled in turn. On
# one thread: its threads made a step slower, not faster (bench/results/2026-12-05-h100-session14.md)
BATCH_FILL_MIN_ROWS = 8


def tokenizer_info(
    model_path: str, load_format: str, tokenizer_path: str | None, vocab_size: int, stop_token_ids: list[int]
) -> Any:
    """xgrammar's view of the model's tokenizer (its decoded vocabulary), padded to the model's vocabulary;
    accepting one of `stop_token_ids` ends a grammar."""
    from pyinfer.tokenizer import IMPORT_LOCK, load_tokenizer

    with IMPORT_LOCK:
        import xgrammar as xgr

        tokenizer = load_tokenizer(model_path, load_format, tokenizer_path)
    if tokenizer is None:
        raise SamplingParamsError("response_format", "this model has no tokenizer to constrain")
    return xgr.TokenizerInfo.from_huggingface(
        tokenizer.hf, vocab_size=vocab_size, stop_token_ids=stop_token_ids
    )


class GrammarBank:
    """Compiled grammars awaiting their matchers, and the live matchers, each under a key its owner
    chose. `compile` may run on another thread than the rest (xgrammar releases the GIL while it
    compiles); the step's calls come from one thread."""

    def __init__(self, info: Any):
        import xgrammar as xgr

        self._compiler = xgr.GrammarCompiler(info, cache_limit_bytes=CACHE_BYTES)
        self._grammars: dict[int, Any] = {}  # compiled, until the request's matchers are made
        self._matchers: dict[int, Any] = {}
        self._batch = xgr.BatchGrammarMatcher(1)
        self.compile_seconds = 0.0

    def compile(self, key: int, constraint: StructuredOutput) -> None:
        """Compiles a request's constraint and keeps it under `key` for `make_matchers`; raises
        SamplingParamsError (naming the request's field) for a constraint that is invalid, uses what
        xgrammar does not support, or (strict) is a JSON schema the grammar cannot wholly enforce."""
        start = time.perf_counter()
        kind, spec, compiler = constraint.kind, constraint.spec, self._compiler
        whitespace = constraint.max_whitespace
        assert whitespace is not None, "Grammars.submit gives every constraint its bound"
        if kind == "json" and (schema := _parsed(spec)) is not None:  # else xgrammar says why it is not JSON
            check_enforceable(schema, constraint.param, constraint.strict)
            spec = json.dumps(for_grammar(schema))
        try:
            if kind == "json":
                compiled = compiler.compile_json_schema(
                    spec, any_whitespace=True, max_whitespace_cnt=whitespace, strict_mode=True
                )
            elif kind == "regex":
                compiled = compiler.compile_regex(spec)
            elif kind == "structural_tag":
                compiled = compiler.compile_structural_tag(with_json_whitespace_bound(spec, whitespace))
            elif kind == "choice":
                choices = " | ".join(json.dumps(choice) for choice in json.loads(spec))
                compiled = compiler.compile_grammar(f"root ::= {choices}")
            else:
                compiled = compiler.compile_grammar(spec)
        except Exception as e:  # xgrammar raises RuntimeError / ValueError with its reason
            raise SamplingParamsError(constraint.param, f"is not a valid constraint: {_reason(e)}") from None
        self._grammars[key] = compiled
        self.compile_seconds += time.perf_counter() - start

    def step(
        self,
        makes: list[tuple[int, list[int]]],
        accepts: list[tuple[int, int]],
        fills: list[tuple[int, int]],
        drops: list[int],
        bitmask: torch.Tensor,
    ) -> list[int]:
        """One step's work, in this order: matchers made at their grammar's start (grammar key, matcher
        keys; the compiled grammar is let go), tokens accepted (key, token), each (key, row)'s allowed next
        tokens written into `bitmask`'s row (all bits set for a grammar already ended), and last keys
        forgotten: a freed sequence's matcher (made in this very step if it never sampled) or an aborted
        request's grammar. Returns the keys whose token was refused: a token outside its mask, a bug."""
        import xgrammar as xgr

        for grammar_key, keys in makes:
            compiled = self._grammars.pop(grammar_key)
            for key in keys:
                self._matchers[key] = xgr.GrammarMatcher(compiled)
        matchers = self._matchers
        refused = [key for key, token in accepts if key in matchers and not matchers[key].accept_token(token)]
        live = []
        for key, row in fills:
            matcher = matchers.get(key)
            if matcher is None or matcher.is_terminated():
                bitmask[row] = -1
                refused += [] if matcher is not None else [key]  # none: a bug, told like a refused token
            else:
                live.append((matcher, row))
        if len(live) < BATCH_FILL_MIN_ROWS:
            for matcher, row in live:
                matcher.fill_next_token_bitmask(bitmask, row)
        else:
            self._batch.batch_fill_next_token_bitmask([m for m, _ in live], bitmask, [r for _, r in live])
        for key in drops:
            matchers.pop(key, None)
            self._grammars.pop(key, None)
        return refused

    def __len__(self) -> int:
        """Matchers and compiled grammars kept."""
        return len(self._matchers) + len(self._grammars)


def _parsed(spec: str) -> Any:
    """A JSON schema's text parsed, or None where it is not JSON (xgrammar then says why)."""
    try:
        return json.loads(spec)
    except ValueError:
        return None


def _reason(error: Exception) -> str:
    """xgrammar's message without its C++ traceback and source location ("[12:00:00] file.cc:12: ")."""
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return re.sub(r"^\[[\d:]+\] \S+:\d+: ", "", lines[-1]) if lines else type(error).__name__


def with_json_whitespace_bound(tag: str, whitespace: int) -> str:
    """A structural tag (JSON text) whose JSON contents (tool calls' arguments, a text schema) each allow
    at most `whitespace` characters of whitespace between two tokens, unless the content sets its own.
    The walk stops at each content: the schema inside is the client's, data included (a `const`)."""

    def bound(node: Any) -> Any:
        if isinstance(node, dict):
            if node.get("type") == "json_schema":
                return {"max_whitespace_cnt": whitespace, **node}
            return {key: bound(value) for key, value in node.items()}
        if isinstance(node, list):
            return [bound(item) for item in node]
        return node

    return json.dumps(bound(json.loads(tag)))
