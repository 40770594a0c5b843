"""Grammar-constrained decoding, as the engine sees it: constraints compiled off the step loop, a matcher
per sequence, and each step's packed token bitmask (one int32 word per 32 tokens, a row per sampled
sequence) for the sampler to apply on the device.

The matchers live in GrammarBanks (engine/grammar_bank.py): on the CPU one bank in this process, whose
constraints compile on a worker thread; on a GPU a bank in each of a few grammar worker processes
(engine/grammar_worker.py), which compile their own requests' constraints and fill their own rows of a
shared mask in parallel, out of the engine thread's GIL. A step's masks follow from the tokens of the
step before, so their work sits between two steps on the device: split over processes, it fits inside
the forward pass, and the engine makes the earlier step's outputs meanwhile.

A sequence's matcher is forgotten when the sequence is freed (a weakref finalizer), whatever ended it.
"""

from __future__ import annotations

import logging
import mmap
import os
import socket
import subprocess
import sys
import threading
import weakref
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from functools import partial
from itertools import count
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_for_replies
from typing import Any, NamedTuple

import torch

from pyinfer.engine.grammar_bank import GrammarBank, tokenizer_info
from pyinfer.engine.sequence import Sequence
from pyinfer.sampling_params import SamplingParamsError, StructuredOutput

log = logging.getLogger(__name__)

MAX_GRAMMAR_WORKERS = 4  # a GPU's default: cores to spare beside the engine and the API processes


def default_grammar_workers(device_type: str) -> int:
    """On a GPU, worker processes while the host has cores for them (a quarter of its cores, at most
    MAX_GRAMMAR_WORKERS); on the CPU none: its cores run the model, and the bank's work is a sliver of
    a CPU step."""
    return 0 if device_type != "cuda" else min(MAX_GRAMMAR_WORKERS, (os.cpu_count() or 1) // 4)


class GrammarRef(NamedTuple):
    """Where a compiled grammar or a sequence's matcher is kept: the bank and its key there."""

    bank: int
    key: int


class Compilation(NamedTuple):
    """A request's constraint being compiled: `future` completes (or raises SamplingParamsError) once
    the grammar under `ref` is ready for the request's matchers."""

    ref: GrammarRef
    future: Future


class Grammars:
    """The engine's constrained decoding, over one bank in this process (workers=0) or a bank in each of
    `workers` processes. Every call comes from the engine's thread."""

    def __init__(
        self,
        tokenizer_args: tuple[str, str, str | None],
        vocab_size: int,
        stop_token_ids: list[int],
        workers: int,
        max_rows: int,
        pin: bool,
    ):
        self._info_args = (*tokenizer_args, vocab_size, stop_token_ids)
        self.workers = workers
        self.words = -(-vocab_size // 32)
        self._keys = count()
        self._links: list[_Link] = []
        self._ready = Future()  # the links, built off the engine thread
        self._unsent: list[tuple[Compilation, StructuredOutput]] = []  # submitted before the links were
        self._matchers = [0] * max(1, workers)  # live matchers in each bank, to place new requests
        self._dropped: list[list[int]] = [[] for _ in range(max(1, workers))]  # keys to forget, by bank
        self._accepts: list[list[tuple[int, int]]] = [[] for _ in range(max(1, workers))]
        self._makes: list[list[tuple[int, list[int]]]] = [[] for _ in range(max(1, workers))]
        self._pending: dict[GrammarRef, Future] = {}  # compilations whose reply has not come
        self._masks: _MaskBuffers | None = None
        self._stepping: list[_Link] = []
        self._rows = 0
        if workers:
            self._masks = _MaskBuffers.shared(max_rows, self.words, pin)
            threading.Thread(
                target=self._start_workers, args=(workers,), daemon=True, name="grammar-start"
            ).start()
        else:
            self._masks = _MaskBuffers.local(self.words, pin)
            self._links = [_LocalLink(self._info_args)]
            self._ready.set_result(None)

    @property
    def compile_seconds(self) -> float:
        return sum(link.compile_seconds for link in self._links)

    # ---- compiling ----------------------------------------------------------------------------------
    def submit(self, constraint: StructuredOutput) -> Compilation:
        """Starts compiling a request's constraint, in the bank with the fewest live matchers."""
        bank = min(range(len(self._matchers)), key=self._matchers.__getitem__)
        compilation = Compilation(GrammarRef(bank, next(self._keys)), Future())
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
            return
        pending = list(self._pending.values())
        if not pending:
            return
        if isinstance(self._links[0], _LocalLink):
            wait(pending, timeout=timeout, return_when=FIRST_COMPLETED)
        else:
            self._receive(wait_for_replies([link.conn for link in self._links], timeout=timeout))

    def attach(self, ref: GrammarRef, seqs: list[Sequence]) -> None:
        """Each sequence (a request's choices) gets its own matcher of the compiled grammar, made in the
        bank with the next step it samples in; it is forgotten when the sequence is freed."""
        keys = []
        for seq in seqs:
            seq.grammar = GrammarRef(ref.bank, next(self._keys))
            keys.append(seq.grammar.key)
            weakref.finalize(seq, self._forget, seq.grammar).atexit = False
        self._makes[ref.bank].append((ref.key, keys))
        self._matchers[ref.bank] += len(keys)

    def discard(self, compilation: Compilation) -> None:
        """A request aborted while its constraint compiled: its grammar is forgotten once compiled."""
        compilation.future.add_done_callback(
            lambda _: self._dropped[compilation.ref.bank].append(compilation.ref.key)
        )

    def _forget(self, ref: GrammarRef) -> None:
        self._dropped[ref.bank].append(ref.key)  # may run on any thread: a list's append is atomic
        self._matchers[ref.bank] -= 1

    # ---- a step -------------------------------------------------------------------------------------
    def accept(self, seq: Sequence, token: int) -> None:
        """A sampled token for the sequence's matcher, taken in with the next step's masks."""
        self._accepts[seq.grammar.bank].append((seq.grammar.key, token))

    def dispatch(self, seqs: list[Sequence]) -> None:
        """Starts filling a step's masks, one row per sampled sequence: each bank takes the tokens
        accepted since its last step, then fills its sequences' rows; rows of the unconstrained (or
        finished) sequences allow every token. `collect` gives the result."""
        fills: list[list[tuple[int, int]]] = [[] for _ in self._accepts]
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
                work = (_drain(self._dropped[bank]), self._makes[bank], self._accepts[bank], fills[bank])
                self._makes[bank], self._accepts[bank] = [], []
                link.step(*work, self._masks.turn, bitmask)
                self._stepping.append(link)

    def collect(self) -> torch.Tensor | None:
        """[rows, ceil(vocab / 32)] int32 of the step dispatched last, or None when none of its rows is
        constrained. The buffer is written again two steps later, once the device has long read it."""
        stepping, self._stepping = self._stepping, []
        for link in stepping:
            while (refused := link.stepped()) is None:  # a worker's: block until its reply comes
                link.conn.poll(None)
                self._receive([link.conn])
            if refused:
                log.error("grammar matchers %s refused their sampled tokens", refused)
        return self._masks.current(self._rows) if self._rows else None

    def close(self) -> None:
        for link in self._links:
            link.close()

    # ---- the links ----------------------------------------------------------------------------------
    def _send_compile(self, compilation: Compilation, constraint: StructuredOutput) -> None:
        if (error := self._ready.exception()) is not None:
            compilation.future.set_exception(error)
            return
        bank = compilation.ref.bank
        self._pending[compilation.ref] = compilation.future
        compilation.future.add_done_callback(lambda _: self._pending.pop(compilation.ref, None))
        self._links[bank].compile(
            compilation.ref.key, constraint, compilation.future, _drain(self._dropped[bank])
        )

    def _receive(self, conns: list[Any]) -> None:
        """Reads the replies waiting on these workers' connections."""
        for bank, link in enumerate(self._links):
            if link.conn in conns:
                link.receive(partial(self._compiled, bank))

    def _compiled(self, bank: int, key: int, error: SamplingParamsError | None) -> None:
        future = self._pending.pop(GrammarRef(bank, key), None)
        if future is None:
            return
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)

    def _start_workers(self, workers: int) -> None:
        try:
            info_json = tokenizer_info(*self._info_args).serialize_json()
            self._links = [_WorkerLink(i, info_json, self._masks) for i in range(workers)]
            log.info("started %d grammar worker processes", workers)
            self._ready.set_result(None)
        except BaseException as e:
            if not isinstance(e, SamplingParamsError):
                log.exception("grammar workers failed to start")
            self._ready.set_exception(e)


def _drain(keys: list[int]) -> list[int]:
    """Takes the keys in the list, leaving any appended meanwhile by a finalizer on another thread."""
    taken = keys[: len(keys)]
    del keys[: len(taken)]
    return taken


class _MaskBuffers:
    """Two mask buffers used in turn, [2, rows, words] int32: in shared memory where worker processes
    fill them (registered with CUDA as pinned memory on a GPU), else grown in this process on demand."""

    def __init__(self, words: int, pin: bool, memfd: int | None = None, rows: int = 0):
        self.words, self.pin, self.memfd, self.turn = words, pin, memfd, 0
        self.buffers: torch.Tensor | None = None
        if memfd is not None:
            self._map = mmap.mmap(memfd, 0)
            self.buffers = torch.frombuffer(self._map, dtype=torch.int32).view(2, rows, words)
            if pin:  # the device then copies straight from it, without staging, off the host's time
                torch.cuda.cudart().cudaHostRegister(self.buffers.data_ptr(), self.buffers.nbytes, 0)

    @classmethod
    def shared(cls, rows: int, words: int, pin: bool) -> _MaskBuffers:
        memfd = os.memfd_create("pyinfer-grammar-masks")
        os.ftruncate(memfd, 2 * rows * words * 4)
        return cls(words, pin, memfd, rows)

    @classmethod
    def local(cls, words: int, pin: bool) -> _MaskBuffers:
        return cls(words, pin)

    def next(self, rows: int) -> torch.Tensor:
        """The other buffer's first `rows` rows, for the step about to be filled."""
        self.turn = 1 - self.turn
        if self.memfd is not None and rows > self.buffers.shape[1]:
            raise ValueError(f"{rows} rows sampled in one step: the masks hold {self.buffers.shape[1]}")
        if self.memfd is None and (self.buffers is None or self.buffers.shape[1] < rows):
            self.buffers = torch.empty((2, max(rows, 64), self.words), dtype=torch.int32, pin_memory=self.pin)
        return self.buffers[self.turn, :rows]

    def current(self, rows: int) -> torch.Tensor:
        return self.buffers[self.turn, :rows]


class _Link:
    """A bank's end as the engine holds it."""

    conn: Any = None
    compile_seconds = 0.0

    def compile(self, key: int, constraint: StructuredOutput, future: Future, dropped: list[int]) -> None: ...
    def step(self, dropped, makes, accepts, fills, turn: int, bitmask: torch.Tensor) -> None: ...
    def stepped(self) -> list[int] | None: ...
    def receive(self, compiled) -> None: ...
    def close(self) -> None: ...


class _LocalLink(_Link):
    """A bank in this process: its constraints compile on a worker thread (the first compile reads the
    tokenizer's vocabulary there too), its steps run in the engine's thread."""

    def __init__(self, info_args: tuple):
        self._info_args = info_args
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="grammar")
        self.bank: GrammarBank | None = None
        self._refused: list[int] = []

    @property
    def compile_seconds(self) -> float:
        return self.bank.compile_seconds if self.bank is not None else 0.0

    def compile(self, key, constraint, future, dropped) -> None:
        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                if self.bank is None:
                    self.bank = GrammarBank(tokenizer_info(*self._info_args))
                self.bank.drop(dropped)
                self.bank.compile(key, constraint)
            except BaseException as e:
                future.set_exception(e)
            else:
                future.set_result(None)

        self._pool.submit(run)

    def step(self, dropped, makes, accepts, fills, turn, bitmask) -> None:
        self.bank.drop(dropped)
        for grammar_key, keys in makes:
            self.bank.make_matchers(grammar_key, keys)
        self._refused = self.bank.step(accepts, fills, bitmask)

    def stepped(self) -> list[int]:
        return self._refused

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class _WorkerLink(_Link):
    """A bank in a grammar worker process, over a socket pair; the process exits when this end closes
    (the engine's process gone included)."""

    def __init__(self, index: int, info_json: str, masks: _MaskBuffers):
        ours, theirs = socket.socketpair()
        rows = masks.buffers.shape[1]
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pyinfer.engine.grammar_worker",
                str(theirs.fileno()),
                str(masks.memfd),
                str(rows),
                str(masks.words),
            ],
            pass_fds=(theirs.fileno(), masks.memfd),
        )
        theirs.close()
        self.conn = Connection(ours.detach())
        self.conn.send(info_json)
        self.index = index
        self.compile_seconds = 0.0
        self._refused: list[int] | None = None

    def compile(self, key, constraint, future, dropped) -> None:
        self._send(("compile", key, constraint.kind, constraint.spec, constraint.param, dropped))

    def step(self, dropped, makes, accepts, fills, turn, bitmask) -> None:
        self._refused = None
        self._send(("step", dropped, makes, accepts, fills, turn))

    def stepped(self) -> list[int] | None:
        return self._refused

    def receive(self, compiled) -> None:
        while self.conn.poll():
            try:
                reply = self.conn.recv()
            except (EOFError, OSError):
                raise RuntimeError(f"grammar worker {self.index} (pid {self.proc.pid}) died") from None
            if reply[0] == "stepped":
                self._refused = reply[1]
            else:
                _, key, error, seconds = reply
                self.compile_seconds += seconds
                compiled(key, None if error is None else SamplingParamsError(*error))

    def _send(self, message: tuple) -> None:
        try:
            self.conn.send(message)
        except OSError:
            raise RuntimeError(f"grammar worker {self.index} (pid {self.proc.pid}) died") from None

    def close(self) -> None:
        self.conn.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
