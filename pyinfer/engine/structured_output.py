"""Grammar-constrained decoding with xgrammar: constraints compiled off the step loop, one matcher per
sequence, and each step's packed token bitmask (one int32 word per 32 tokens, a row per sampled
sequence) for the sampler to apply on the device.

A request with a constraint waits here, outside the scheduler, until its grammar is compiled; the
compile runs in a worker thread (xgrammar caches its results), so a large schema delays only its own
request. The tokenizer's vocabulary, which xgrammar needs, is read in that thread too, on
the first constrained request.
"""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch

from pyinfer.engine.sequence import Sequence
from pyinfer.sampling_params import SamplingParamsError, StructuredOutput

# Whitespace a JSON reply may put between two tokens of its structure: enough for any indentation a
# model is likely to use, and a bound on the runs of spaces and newlines that loop until max_tokens.
MAX_JSON_WHITESPACE = 16
CACHE_BYTES = 256 * 2**20  # xgrammar's cache of compiled grammars, for repeated constraints
# Mask filling: from this many constrained rows xgrammar's batch matcher fills them in one C++ call; fewer
# are filled in turn. On one thread: its threads made a step slower, not faster, on the GPU's host and on
# our CPU (bench/results/2026-12-05-h100-session14.md)
BATCH_FILL_MIN_ROWS = 8
FILL_THREADS = 1


class GrammarCompiler:
    """Compiles constraints for one model's vocabulary in a worker thread. xgrammar caches what it
    compiled, keyed by the constraint's text, within CACHE_BYTES."""

    def __init__(
        self,
        model_path: str,
        load_format: str,
        tokenizer_path: str | None,
        vocab_size: int,
        stop_token_ids: list[int],
    ):
        self._tokenizer_args = (model_path, load_format, tokenizer_path)
        self._vocab_size = vocab_size
        self._stop_token_ids = stop_token_ids
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="grammar")
        self._compiler: Any = None  # xgrammar's, built on the first compile
        self.compile_seconds = 0.0  # in the worker thread, the tokenizer's vocabulary read included

    def submit(self, constraint: StructuredOutput) -> Future:
        """A future of the compiled grammar; it raises SamplingParamsError (naming the request's field)
        for a constraint that is invalid or uses what xgrammar does not support."""
        return self._pool.submit(self._compile, constraint)

    def _compile(self, constraint: StructuredOutput) -> Any:
        import xgrammar as xgr

        start = time.perf_counter()
        if self._compiler is None:
            self._compiler = xgr.GrammarCompiler(self._tokenizer_info(xgr), cache_limit_bytes=CACHE_BYTES)
        kind, spec = constraint.kind, constraint.spec
        try:
            if kind == "json":
                compiled = self._compiler.compile_json_schema(
                    spec, any_whitespace=True, max_whitespace_cnt=MAX_JSON_WHITESPACE, strict_mode=True
                )
            elif kind == "regex":
                compiled = self._compiler.compile_regex(spec)
            elif kind == "structural_tag":
                compiled = self._compiler.compile_structural_tag(spec)
            elif kind == "choice":
                choices = " | ".join(json.dumps(choice) for choice in json.loads(spec))
                compiled = self._compiler.compile_grammar(f"root ::= {choices}")
            else:
                compiled = self._compiler.compile_grammar(spec)
        except Exception as e:  # xgrammar raises RuntimeError / ValueError with its reason
            raise SamplingParamsError(constraint.param, f"is not a valid constraint: {_reason(e)}") from None
        self.compile_seconds += time.perf_counter() - start
        return compiled

    def _tokenizer_info(self, xgr: Any) -> Any:
        from pyinfer.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(*self._tokenizer_args)
        if tokenizer is None:
            raise SamplingParamsError("response_format", "this model has no tokenizer to constrain")
        return xgr.TokenizerInfo.from_huggingface(
            tokenizer.hf, vocab_size=self._vocab_size, stop_token_ids=self._stop_token_ids
        )

    @staticmethod
    def matcher(compiled: Any) -> Any:
        import xgrammar as xgr

        return xgr.GrammarMatcher(compiled)


def _reason(error: Exception) -> str:
    """xgrammar's message without its C++ traceback and source location ("[12:00:00] file.cc:12: ")."""
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return re.sub(r"^\[[\d:]+\] \S+:\d+: ", "", lines[-1]) if lines else type(error).__name__


class MaskFiller:
    """Fills each step's packed token bitmask on the host: one int32 word per 32 tokens, a row per
    sampled sequence. Many constrained rows are filled by xgrammar's batch matcher, in C++ with no
    Python between rows, so that their masks are ready before the device's forward pass ends; a few rows
    are filled here in turn. The masks go into two host buffers used in turn (pinned for a GPU, which
    copies from them without a staging copy): a buffer is written again two fills later, once the
    device has long read it (the engine takes the step in between's tokens first)."""

    def __init__(self, vocab_size: int, threads: int = FILL_THREADS, pin: bool = False):
        self.vocab_size = vocab_size
        self.threads = max(1, threads)
        self.pin = pin
        self._buffers: list[torch.Tensor | None] = [None, None]
        self._turn = 0
        self._batch: Any = None  # xgrammar's BatchGrammarMatcher, started with the first large batch
        self._batch_threads = 0

    def fill(self, seqs: list[Sequence]) -> torch.Tensor | None:
        """[len(seqs), ceil(vocab / 32)] int32: each constrained sequence's allowed next tokens
        (xgrammar clears the ids the tokenizer lacks, such as a model's padded vocabulary), all bits
        set for the others; None when no live sequence is constrained (a grammar ended by the token just
        taken is skipped: its sequence is finished and its row not used)."""
        rows = [
            row
            for row, seq in enumerate(seqs)
            if seq.grammar is not None and not seq.is_finished and not seq.grammar.is_terminated()
        ]
        if not rows:
            return None
        bitmask = self._buffer(len(seqs))
        bitmask.fill_(-1)
        if len(rows) < BATCH_FILL_MIN_ROWS:
            for row in rows:
                seqs[row].grammar.fill_next_token_bitmask(bitmask, row)
        else:
            matchers = [seqs[row].grammar for row in rows]
            self._batch_matcher().batch_fill_next_token_bitmask(matchers, bitmask, rows)
        return bitmask

    def _buffer(self, rows: int) -> torch.Tensor:
        self._turn = 1 - self._turn
        buffer = self._buffers[self._turn]
        if buffer is None or buffer.shape[0] < rows:
            words = -(-self.vocab_size // 32)
            buffer = torch.empty((max(rows, 64), words), dtype=torch.int32, pin_memory=self.pin)
            self._buffers[self._turn] = buffer
        return buffer[:rows]

    def _batch_matcher(self) -> Any:
        if self._batch is None or self._batch_threads != self.threads:
            import xgrammar as xgr

            self._batch, self._batch_threads = xgr.BatchGrammarMatcher(self.threads), self.threads
        return self._batch
