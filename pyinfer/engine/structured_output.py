"""Grammar-constrained decoding, as the engine sees it: constraints compiled off the step loop, a matcher
per sequence, and each step's packed token bitmask (one int32 word per 32 tokens, a row per sampled
sequence) for the sampler to apply on the device.

The matchers live in GrammarBanks (engine/grammar_bank.py, reached through engine/grammar_links.py): on
the CPU one bank in this process, whose constraints compile on a thread of their own; on a GPU a bank in
each of a few grammar worker processes (engine/grammar_worker.py), which compile their own requests'
constraints and fill their own rows of a shared mask in parallel, out of the engine thread's GIL. A step's masks follow from the tokens of the
step before, so their work sits between two steps on the device: split over processes, it fits inside
the forward pass, and the engine makes the earlier step's outputs meanwhile.

A sequence's matcher is forgotten when the sequence is freed (a weakref finalizer), whatever ended it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from concurrent.futures import FIRST_COMPLETED, Future, wait
from functools import partial
from itertools import count
from multiprocessing.connection import wait as wait_for_replies
from typing import NamedTuple

import msgspec
import torch

from pyinfer.engine.grammar_bank import tokenizer_info
from pyinfer.engine.grammar_links import Link, LocalLink, MaskBuffers, Pairs, WorkerLink
from pyinfer.engine.sequence import Sequence
from pyinfer.sampling_params import SamplingParamsError, StructuredOutput

log = logging.getLogger(__name__)

MAX_GRAMMAR_WORKERS = 4  # a GPU's default: cores to spare beside the engine and the API processes


def default_grammar_workers(device_type: str) -> int:
    """On a GPU, worker processes while the host has cores for them (a quarter of its cores, at most
    MAX_GRAMMAR_WORKERS); on the CPU none: its cores run the model, and the bank's work is a sliver of
    a CPU step."""
    return 0 if device_type != "cuda" else min(MAX_GRAMMAR_WORKERS, len(os.sched_getaffinity(0)) // 4)


class GrammarRef(NamedTuple):
    """Where a compiled grammar or a sequence's matcher is kept: the bank and its key there."""

    bank: int
    key: int


class Compilation(NamedTuple):
    """A request's constraint being compiled: `future` completes (or raises SamplingParamsError) once
    the grammar under `ref` is ready for the request's `n` matchers."""

    ref: GrammarRef
    future: Future
    n: int


class Grammars:
    """The engine's constrained decoding, over one bank in this process (workers=0) or a bank in each of
    `workers` processes. Every call comes from the engine's thread; only a freed sequence's finalizer
    may run on another."""

    def __init__(
        self,
        tokenizer_args: tuple[str, str, str | None],
        vocab_size: int,
        stop_token_ids: list[int],
        workers: int,
        max_rows: int,
        pin: bool,
        max_json_whitespace: int,
    ):
        info_args = (*tokenizer_args, vocab_size, stop_token_ids)
        self.workers = workers
        self.max_json_whitespace = max_json_whitespace  # for constraints that set none
        banks = max(1, workers)
        self._keys = count()
        self._links: list[Link] = []
        self._ready: Future = Future()  # the links, started off the engine thread
        self._unsent: list[tuple[Compilation, StructuredOutput]] = []  # submitted before the links were
        self._lock = threading.RLock()  # over what a finalizer writes (on this thread too, in a GC pass)
        self._closing = False
        self._load = [0] * banks  # matchers live or promised in each bank, to place new requests
        self._dropped: list[list[int]] = [[] for _ in range(banks)]  # keys to forget, by bank
        self._makes: list[list[tuple[int, list[int]]]] = [[] for _ in range(banks)]
        self._accepts: list[Pairs] = [[] for _ in range(banks)]
        self._pending: dict[GrammarRef, Future] = {}  # compilations whose worker has not replied
        self._stepping: list[Link] = []
        self._rows = 0
        self._compile_seconds_before = 0.0  # what the warm-up spent, not counted
        words = -(-vocab_size // 32)
        self._masks = MaskBuffers(words, pin, shared_rows=max_rows if workers else 0)
        if workers:
            threading.Thread(
                target=self._start_workers, args=(info_args, workers), daemon=True, name="grammar-start"
            ).start()
        else:
            self._links = [LocalLink(info_args)]
            self._ready.set_result(None)

    @property
    def compile_seconds(self) -> float:
        """Seconds spent compiling clients' constraints (since reset_compile_seconds)."""
        return sum(link.compile_seconds for link in self._links) - self._compile_seconds_before

    def reset_compile_seconds(self) -> None:
        self._compile_seconds_before += self.compile_seconds

    # ---- compiling ----------------------------------------------------------------------------------
    def submit(self, constraint: StructuredOutput, n: int) -> Compilation:
        """Starts compiling the constraint of a request of `n` choices, in the bank with the fewest
        matchers live or promised."""
        if constraint.max_whitespace is None:
            constraint = msgspec.structs.replace(constraint, max_whitespace=self.max_json_whitespace)
        with self._lock:
            bank = min(range(len(self._load)), key=self._load.__getitem__)
            self._load[bank] += n
        compilation = Compilation(GrammarRef(bank, next(self._keys)), Future(), n)
        if self._ready.done():
            self._send_compile(compilation, constraint)
        else:
            self._unsent.append((compilation, constraint))
        return compilation

    def poll(self, timeout: float = 0.0) -> None:
        """Completes the compilations that finished, waiting up to `timeout` for one when none has."""
        if self._unsent and self._ready.done():
            unsent, self._unsent = self._unsent, []
            for compilation, constraint in unsent:
                self._send_compile(compilation, constraint)
        if self._unsent:
            wait([self._ready], timeout=timeout)
        elif self._pending and self.workers:
            self._receive(wait_for_replies([link.conn for link in self._links], timeout=timeout))
        elif self._pending:
            wait(list(self._pending.values()), timeout=timeout, return_when=FIRST_COMPLETED)

    def attach(self, compilation: Compilation, seqs: list[Sequence]) -> None:
        """Each sequence (a request's choices) gets its own matcher of the compiled grammar, made in the
        bank with the first step it samples in; it is forgotten when the sequence is freed."""
        bank = compilation.ref.bank
        keys = []
        for seq in seqs:
            seq.grammar = GrammarRef(bank, next(self._keys))
            keys.append(seq.grammar.key)
            weakref.finalize(seq, self._forget, seq.grammar, 1).atexit = False
        self._makes[bank].append((compilation.ref.key, keys))

    def discard(self, compilation: Compilation) -> None:
        """A request refused, or aborted while its constraint compiled: its grammar, if any, is
        forgotten once the compile ends."""
        compilation.future.add_done_callback(lambda _: self._forget(compilation.ref, compilation.n))

    def _forget(self, ref: GrammarRef, matchers: int) -> None:
        with self._lock:
            self._dropped[ref.bank].append(ref.key)
            self._load[ref.bank] -= matchers

    # ---- a step -------------------------------------------------------------------------------------
    def accept(self, seq: Sequence, token: int) -> None:
        """A sampled token for the sequence's matcher, taken in with the next step's masks."""
        self._accepts[seq.grammar.bank].append((seq.grammar.key, token))

    def dispatch(self, seqs: list[Sequence]) -> None:
        """Starts filling a step's masks, one row per sampled sequence: each bank with rows to fill makes
        the matchers attached since its last step, takes the tokens accepted since, fills its rows, then
        forgets what was freed; rows of the unconstrained (or finished) sequences allow every token.
        `collect` gives the result."""
        self._stepping = []  # left by a step an error cut short: its late replies are told apart
        fills: list[Pairs] = [[] for _ in self._load]
        for row, seq in enumerate(seqs):
            if seq.grammar is not None and not seq.is_finished:
                fills[seq.grammar.bank].append((seq.grammar.key, row))
        self._rows = len(seqs) if any(fills) else 0
        if not self._rows:
            return
        bitmask = self._masks.next(len(seqs))
        constrained = {row for rows in fills for _, row in rows}
        if free := [row for row in range(len(seqs)) if row not in constrained]:
            bitmask.index_fill_(0, torch.tensor(free), -1)
        for bank, link in enumerate(self._links):
            if fills[bank]:
                with self._lock:
                    drops, self._dropped[bank] = self._dropped[bank], []
                makes, accepts = self._makes[bank], self._accepts[bank]
                self._makes[bank], self._accepts[bank] = [], []  # sent once, even if the step fails
                link.step(makes, accepts, fills[bank], drops, self._masks.turn, bitmask)
                self._stepping.append(link)

    def collect(self) -> torch.Tensor | None:
        """[rows, ceil(vocab / 32)] int32 of the step dispatched last, or None when none of its rows is
        constrained."""
        stepping, self._stepping = self._stepping, []
        for link in stepping:
            while (refused := link.stepped()) is None:  # a worker's reply has yet to come
                self._receive([link.conn])
            if refused:
                log.error("grammar matchers %s refused their sampled tokens", refused)
        return self._masks.current(self._rows) if self._rows else None

    @property
    def busy(self) -> bool:
        """Whether a compilation has yet to be sent or answered (a discarded one's included)."""
        return bool(self._pending or self._unsent)

    def close(self, timeout: float = 5.0) -> None:
        """Stops the workers (once started, if they are starting) within `timeout`; frees the masks."""
        deadline = time.monotonic() + timeout
        if self.workers:
            wait([self._ready], timeout=timeout)
        with self._lock:  # workers still starting past the wait are closed by their starter
            self._closing = True
            links = list(self._links)
        _close_links(links, deadline)
        self._masks.close()

    # ---- the links ----------------------------------------------------------------------------------
    def _send_compile(self, compilation: Compilation, constraint: StructuredOutput) -> None:
        if (error := self._ready.exception()) is not None:
            compilation.future.set_exception(error)
            return
        ref = compilation.ref
        self._pending[ref] = compilation.future
        compilation.future.add_done_callback(lambda _: self._pending.pop(ref, None))
        self._links[ref.bank].compile(ref.key, constraint, compilation.future)

    def _receive(self, conns: list) -> None:
        """Reads the replies waiting on these workers' connections."""
        for bank, link in enumerate(self._links):
            if link.conn in conns:
                link.receive(partial(self._compiled, bank))

    def _compiled(self, bank: int, key: int, error: SamplingParamsError | None) -> None:
        future = self._pending.get(GrammarRef(bank, key))
        if future is None:
            return
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)

    def _start_workers(self, info_args: tuple, workers: int) -> None:
        """Off the engine's thread: reading a large vocabulary takes a second of a GPU server's start."""
        links: list[Link] = []
        try:
            info_json = tokenizer_info(*info_args).serialize_json()
            with self._lock:
                self._raise_if_closing()
                links = [WorkerLink(i, self._masks) for i in range(workers)]
            for link in links:  # all started first: each reads the vocabulary once it has imported
                link.start(info_json)
            with self._lock:
                self._raise_if_closing()
                self._links = links
            log.info("started %d grammar worker processes", workers)
            self._ready.set_result(None)
        except BaseException as e:
            # no tokenizer: every constrained request is refused; closed: nothing is wanted any more
            if not isinstance(e, SamplingParamsError) and not self._closing:
                log.exception("grammar workers failed to start")
            _close_links(links, time.monotonic() + 5.0)
            self._ready.set_exception(e)

    def _raise_if_closing(self) -> None:
        """Under the lock, in the starter: `close` has taken the links, so these would be left open."""
        if self._closing:
            raise RuntimeError("the grammars were closed while their workers started")


def _close_links(links: list[Link], deadline: float) -> None:
    """Closes the links; a worker's process is waited for until `deadline` (time.monotonic), then killed."""
    for link in links:
        link.close()
    for link in links:
        if isinstance(link, WorkerLink):
            link.wait(deadline)
