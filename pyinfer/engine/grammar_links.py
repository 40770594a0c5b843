"""The engine's ends of its grammar banks (engine/grammar_bank.py): a bank in the engine's process, or one
in a grammar worker process (engine/grammar_worker.py) over a socket pair; and the two mask buffers the
banks fill in turn."""

from __future__ import annotations

import logging
import mmap
import os
import socket
import subprocess
import sys
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Protocol

import torch

from pyinfer.engine.cuda_runtime import cuda_runtime
from pyinfer.engine.grammar_bank import GrammarBank, tokenizer_info
from pyinfer.sampling_params import SamplingParamsError, StructuredOutput

log = logging.getLogger(__name__)

STEP_TIMEOUT_S = 60.0  # a worker that takes longer over one step's masks is stuck: the step fails

Makes = list[tuple[int, list[int]]]  # (grammar key, its new matchers' keys)
Pairs = list[tuple[int, int]]  # (matcher key, token) accepted, or (matcher key, row) filled
Compiled = Callable[[int, SamplingParamsError | None], None]  # a compilation's key, and its error if any


class MaskBuffers:
    """Two mask buffers used in turn, [2, rows, words] int32: in shared memory (a memfd) where worker
    processes fill them, registered with CUDA as pinned memory on a GPU; else grown in this process."""

    def __init__(self, words: int, pin: bool, shared_rows: int = 0):
        self.words, self.pin, self.turn = words, pin, 0
        self.memfd: int | None = None
        self.buffers: torch.Tensor | None = None
        if shared_rows:
            self.memfd = os.memfd_create("pyinfer-grammar-masks")
            os.ftruncate(self.memfd, 2 * shared_rows * words * 4)
            self.buffers = torch.frombuffer(mmap.mmap(self.memfd, 0), dtype=torch.int32).view(
                2, shared_rows, words
            )
            device = torch.cuda.current_device() if pin and _host_register(self.buffers) else None
            # also when the buffers are dropped unclosed: a range unmapped while still registered would
            # make CUDA refuse the next mapping there, and that refusal would fail the next kernel launched
            self._release = weakref.finalize(self, _queue_release, self.buffers, self.memfd, device)
            self._release.atexit = False

    def next(self, rows: int) -> torch.Tensor:
        """The other buffer's first `rows` rows, for the step about to be filled. It was last read by the
        device two steps ago, and the engine has taken a later step's tokens since."""
        self.turn = 1 - self.turn
        if self.memfd is not None:
            if rows > self.buffers.shape[1]:
                raise ValueError(f"{rows} rows sampled in one step: the masks hold {self.buffers.shape[1]}")
        elif self.buffers is None or self.buffers.shape[1] < rows:
            self.buffers = torch.empty((2, max(rows, 64), self.words), dtype=torch.int32, pin_memory=self.pin)
        return self.buffers[self.turn, :rows]

    def current(self, rows: int) -> torch.Tensor:
        return self.buffers[self.turn, :rows]

    def close(self) -> None:
        if self.memfd is not None:
            self.buffers = None
            self.memfd = None
            self._release()
            release_dropped_masks()


# Registered buffers let go of, each with its memfd and the device it is registered with. Released on
# the engine's thread, not in the finalizer: a GC pass may run that on any thread, where a synchronize
# could break a CUDA graph being captured. Held here, the memory stays mapped until then.
_RELEASES: list[tuple[torch.Tensor, int, int]] = []


def _queue_release(buffers: torch.Tensor, memfd: int, device: int | None) -> None:
    if device is None:  # nothing of CUDA's to undo
        os.close(memfd)
    else:
        _RELEASES.append((buffers, memfd, device))


def release_dropped_masks() -> None:
    """Unregisters and closes the buffers let go of since the last call (before a new registration,
    which CUDA would refuse over a range still registered)."""
    while _RELEASES:
        buffers, memfd, device = _RELEASES.pop()
        try:
            torch.cuda.synchronize(device)  # a copy from it may still be queued
            torch.cuda.cudart().cudaHostUnregister(buffers.data_ptr())
        finally:
            os.close(memfd)


def _host_register(buffers: torch.Tensor) -> bool:
    """Pins `buffers` for the device's copies from them; False (and a warning) where CUDA refuses."""
    release_dropped_masks()
    cudart = torch.cuda.cudart()
    code = cudart.cudaHostRegister(buffers.data_ptr(), buffers.nbytes, 0)
    if code == 0:
        return True
    log.warning(
        "could not pin the grammar masks (%s): copies will be staged", cudart.cudaGetErrorString(code)
    )
    runtime = cuda_runtime()
    if runtime is not None:  # the refusal stays CUDA's last error, which would fail the next launch
        runtime.cudaGetLastError()
    return False


class Link(Protocol):
    """A bank as the engine holds it. Every call comes from the engine's thread."""

    conn: Connection | None
    compile_seconds: float

    def compile(self, key: int, constraint: StructuredOutput, future: Future) -> None:
        """Compiles under `key`; `future` completes here (in-process) or through `receive` (a worker)."""

    def step(
        self, makes: Makes, accepts: Pairs, fills: Pairs, drops: list[int], turn: int, bitmask: torch.Tensor
    ) -> None:
        """Starts GrammarBank.step on the buffer of `turn` (`bitmask`, in this process)."""

    def stepped(self) -> list[int] | None:
        """The refused keys of the step started last, or None while it runs."""

    def receive(self, compiled: Compiled) -> None:
        """Reads the replies waiting (a worker's), compilations' through `compiled`."""

    def close(self) -> None: ...


class LocalLink:
    """A bank in this process: its constraints compile on a thread of their own (the first compile reads
    the tokenizer's vocabulary there too); its steps run on the engine's thread."""

    conn = None

    def __init__(self, info_args: tuple[str, str, str | None, int, list[int]]):
        self._info_args = info_args
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="grammar")
        self.bank: GrammarBank | None = None
        self._refused: list[int] = []

    @property
    def compile_seconds(self) -> float:
        return self.bank.compile_seconds if self.bank is not None else 0.0

    def compile(self, key: int, constraint: StructuredOutput, future: Future) -> None:
        def run() -> None:
            try:
                if self.bank is None:
                    self.bank = GrammarBank(tokenizer_info(*self._info_args))
                self.bank.compile(key, constraint)
            except BaseException as e:
                future.set_exception(e)
            else:
                future.set_result(None)

        self._pool.submit(run)

    def step(
        self, makes: Makes, accepts: Pairs, fills: Pairs, drops: list[int], turn: int, bitmask: torch.Tensor
    ) -> None:
        self._refused = self.bank.step(makes, accepts, fills, drops, bitmask)

    def stepped(self) -> list[int]:
        return self._refused

    def receive(self, compiled: Compiled) -> None:
        pass

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class WorkerLink:
    """A bank in a grammar worker process, over a socket pair; the process exits when this end closes,
    the engine's process dying included. Steps are numbered: the reply to a step abandoned by an error
    is told apart from the next one's."""

    def __init__(self, index: int, masks: MaskBuffers):
        ours, theirs = socket.socketpair()
        args = [str(theirs.fileno()), str(masks.memfd), str(masks.buffers.shape[1]), str(masks.words)]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pyinfer.engine.grammar_worker", *args],
            pass_fds=(theirs.fileno(), masks.memfd),
        )
        theirs.close()
        self.conn = Connection(ours.detach())
        self.index = index
        self.compile_seconds = 0.0
        self._steps_sent = self._steps_answered = 0
        self._refused: list[int] = []

    def start(self, info_json: str) -> None:
        """Sends the tokenizer's vocabulary (blocking until the process, importing xgrammar, reads it)."""
        self._send(info_json)

    def compile(self, key: int, constraint: StructuredOutput, future: Future) -> None:
        self._send(("compile", key, constraint))

    def step(
        self, makes: Makes, accepts: Pairs, fills: Pairs, drops: list[int], turn: int, bitmask: torch.Tensor
    ) -> None:
        self._steps_sent += 1
        self._send(("step", self._steps_sent, makes, accepts, fills, drops, turn))

    def stepped(self) -> list[int] | None:
        if self._steps_answered == self._steps_sent:
            return self._refused
        if not self.conn.poll(STEP_TIMEOUT_S):
            raise RuntimeError(
                f"grammar worker {self.index} (pid {self.proc.pid}) took over {STEP_TIMEOUT_S:.0f}s over one step"
            )
        return None

    def receive(self, compiled: Compiled) -> None:
        while self.conn.poll():
            try:
                reply = self.conn.recv()
            except (EOFError, OSError):
                raise self._died() from None
            if reply[0] == "stepped":
                _, self._steps_answered, self._refused = reply
            else:
                _, key, error, seconds = reply
                self.compile_seconds += seconds
                compiled(key, None if error is None else SamplingParamsError(*error))

    def _send(self, message: object) -> None:
        try:
            self.conn.send(message)
        except OSError:
            raise self._died() from None

    def _died(self) -> RuntimeError:
        return RuntimeError(
            f"grammar worker {self.index} (pid {self.proc.pid}) died (exit code {self.proc.poll()})"
        )

    def close(self) -> None:
        """Closes our end; the process leaves on its own (`Grammars.close` waits for it)."""
        self.conn.close()

    def wait(self, deadline: float) -> None:
        """Waits for the process to leave until `deadline` (time.monotonic), then kills it."""
        try:
            self.proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
