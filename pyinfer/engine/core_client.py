"""AsyncEngineClient: the server's handle on the engine-core process.

It starts `python -m pyinfer.engine.core` (or, one of several API processes, attaches to the one the
launcher started: an EngineLink), sends requests over ZMQ and routes each step's outputs to per-request
queues. Torch-free: the server reaches the engine only through this module and messages.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import shutil
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
import zmq
import zmq.asyncio

from pyinfer.config import CORE_SETTINGS_REFUSED, EngineConfig
from pyinfer.engine.messages import (
    RECONNECT_MS,
    AbortChoice,
    Aborted,
    AbortRequest,
    EngineReady,
    EngineRequest,
    EngineStats,
    FromCore,
    Rejected,
    SeqOutput,
    Shutdown,
    StatsRequest,
    StepOutputs,
)
from pyinfer.engine.queue_board import QueueBoard, QueueCounts
from pyinfer.run_dirs import make_run_dir
from pyinfer.sampling_params import SamplingParams

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineLink:
    """An API process's link to an engine core another process started: the addresses it binds (the
    core connects to them) and the core's pid, watched for its death."""

    input: str  # requests go to the core here
    output: str  # its outputs come back here
    core_pid: int
    queue_board: str  # the API processes' QueueBoard file
    slot: int  # this process's place on it


class EngineDeadError(RuntimeError):
    """The engine-core process is gone; no request can complete."""


class RequestShed(RuntimeError):
    """The engine core shed a request that had not started from its full queue, for a more urgent one."""


class RequestRejected(ValueError):
    """The engine refused a request; `param` names the bad field, if known."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


def coalesced(items: list[SeqOutput | Exception | None]) -> list[SeqOutput | Exception | None]:
    """Outputs that waited together, each choice's consecutive ones joined into one (tokens in order,
    the last one's end): a consumer that fell behind catches up in one reply chunk per choice rather
    than one per token. Nothing joins across an error or a wake-up."""
    if len(items) == 1:  # the consumer keeps up: the usual case, once a token
        return items
    joined: list[SeqOutput | Exception | None] = []
    growing: dict[int, int] = {}  # choice -> where its latest unfinished output is in `joined`
    for item in items:
        if not isinstance(item, SeqOutput):
            growing.clear()
            joined.append(item)
            continue
        if (at := growing.get(item.index)) is not None:
            item = _join(joined[at], item)  # type: ignore[arg-type]
            joined[at] = item
        else:
            growing[item.index] = len(joined)
            joined.append(item)
        if item.finish_reason is not None:
            del growing[item.index]
    return joined


def _join(first: SeqOutput, then: SeqOutput) -> SeqOutput:
    logprobs = (
        None
        if first.logprobs is None and then.logprobs is None
        else [
            *(first.logprobs or []),
            *(then.logprobs or []),
        ]
    )
    return msgspec.structs.replace(
        then, new_token_ids=first.new_token_ids + then.new_token_ids, logprobs=logprobs
    )


class _Stream:
    """Outputs of one request on their way to its consumer."""

    def __init__(self, n: int, prompt_tokens: int, priority: int):
        self.queue: asyncio.Queue[SeqOutput | Exception | None] = asyncio.Queue()
        self.open = set(range(n))  # choices still generating
        self.prompt_tokens = prompt_tokens
        self.priority = priority
        self.queued = True  # until its first output: waiting for the engine (or in its prefill)


class QueuePlace:
    """A request an API process has admitted and not yet sent: counted among the queued requests, with its
    prompt tokens once they are known, so that requests admitted meanwhile see it. Each prompt's stream
    takes its count over when it is sent; what is still held is released when the response ends."""

    def __init__(self, client: AsyncEngineClient, priority: int):
        self._client = client
        self.priority = priority
        self.holds_request = True
        self.tokens = 0  # prompt tokens held: known and not yet sent
        client.count_queued(priority, 1, 0)

    def add_tokens(self, n: int) -> None:
        self.tokens += n
        self._client.count_queued(self.priority, 0, n)

    def hand_over(self, tokens: int) -> None:
        """A prompt of `tokens` tokens was sent: its stream counts it (and the request) now."""
        tokens = min(tokens, self.tokens)
        self.tokens -= tokens
        self._client.count_queued(self.priority, -1 if self.holds_request else 0, -tokens)
        self.holds_request = False

    def release(self) -> None:
        """The response has ended: nothing of it waits to be sent any more."""
        self.hand_over(self.tokens)


class AsyncEngineClient:
    def __init__(
        self,
        config: EngineConfig,
        core_args: tuple[str, ...] = (),  # the core's own flags (its logging, the queue's bounds)
        link: EngineLink | None = None,  # attach to a core started elsewhere instead of starting one
    ):
        self.config = config
        self.link = link
        self.core_args = core_args
        self.ready: EngineReady | None = None
        self.dead = False
        self.settings_refused = False  # the core we started refused its settings (it said why)
        self.on_death: Callable[[], None] | None = None
        self._streams: dict[str, _Stream] = {}
        # requests admitted or sent that have no output yet (QueuePlace), posted for the other API
        # processes where there are others
        self._queued = QueueCounts(QueueBoard(link.queue_board, link.slot) if link is not None else None)
        # (when asked, answer) of each question for the core's figures, oldest first: it answers in order
        self._stats_waiters: deque[tuple[float, asyncio.Future[dict[str, Any]]]] = deque()
        # (when, what) the core last answered; its ready message holds the first figures, and nothing
        # asks for them before ready, so this placeholder is never shown
        self._last_stats: tuple[float, dict[str, Any]] = (time.monotonic(), {})
        self._failure: Callable[[], Exception] | None = None  # set by fail_all: what new requests raise
        self._closing = False
        self._proc: asyncio.subprocess.Process | None = None
        self._tasks: list[asyncio.Task] = []

    @property
    def pid(self) -> int | None:
        if self.link is not None:
            return self.link.core_pid
        return self._proc.pid if self._proc else None

    def queued_ahead_of(self, priority: int) -> tuple[int, int]:
        """Requests admitted and waiting for their first output that a request of `priority` would not
        overtake (those at least as urgent), ours and the other API processes', and their prompt tokens."""
        return self._queued.ahead_of(priority)

    def count_queued(self, priority: int, requests: int, tokens: int) -> None:
        """Add to our queued requests of `priority` and their prompt tokens, posting them for the others."""
        self._queued.add(priority, requests, tokens)

    @property
    def num_requests(self) -> int:
        """Requests in flight (sent and not yet finished)."""
        return len(self._streams)

    # ---- life cycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the engine-core process, or attach to the link's; returns at once (see wait_ready)."""
        self._ready = asyncio.get_running_loop().create_future()
        if self.link is None:
            self._dir = make_run_dir("core-")
            to_core, from_core = f"ipc://{self._dir}/to-core", f"ipc://{self._dir}/from-core"
        else:
            to_core, from_core = self.link.input, self.link.output
        self._zmq = zmq.asyncio.Context()
        self._to_core = self._zmq.socket(zmq.PUSH)
        self._to_core.setsockopt(zmq.SNDHWM, 0)
        self._to_core.bind(to_core)
        self._from_core = self._zmq.socket(zmq.PULL)
        self._from_core.setsockopt(zmq.RCVHWM, 0)
        self._from_core.bind(from_core)
        if self.link is None:
            await self._spawn(to_core, from_core)
        self._tasks = [asyncio.create_task(self._receive()), asyncio.create_task(self._watch())]

    async def _spawn(self, to_core: str, from_core: str) -> None:
        # The core holds the read end of this pipe; when we die, the write end closes and it exits.
        read_fd, self._lifeline = os.pipe()
        self._proc = await asyncio.create_subprocess_exec(
            *core_command(self.config, [(to_core, from_core)], read_fd, self.core_args),
            pass_fds=(read_fd,),
            start_new_session=True,  # Ctrl-C in a terminal reaches the server only; it stops the core
        )
        os.close(read_fd)
        log.info("engine core started (pid %d)", self._proc.pid)

    async def core_was_ready(self) -> bool:
        """Attached (one of several API processes): whether the core had loaded before we bound our link.
        Its ready message then waits in a pipe of its own, which it reconnects to us within RECONNECT_MS:
        it is here within that time, or the core is still loading (and sends it when done)."""
        return self.link is not None and bool(await self._from_core.poll(timeout=2 * RECONNECT_MS))

    async def wait_ready(self) -> EngineReady:
        """Wait until the model is loaded; raises EngineDeadError if the core dies first."""
        return await asyncio.shield(self._ready)

    async def shutdown(self, timeout: float = 10.0) -> None:
        """Stop the core we started: politely, then by force. Attached, say Shutdown on our link (the
        core stops once every link has) and leave."""
        self._closing = True
        if self.link is not None:
            self._send(Shutdown())
        elif self._proc.returncode is None:
            self._send(Shutdown())
            try:
                await asyncio.wait_for(self._proc.wait(), timeout)
            except TimeoutError:
                log.warning("engine core did not stop in %.0fs; killing it", timeout)
                self._proc.kill()
                await self._proc.wait()
        for task in self._tasks:
            task.cancel()
        self._to_core.close(linger=0 if self.link is None else 1000)  # attached: Shutdown must leave
        self._from_core.close(linger=0)
        self._zmq.term()
        if self.link is None:
            os.close(self._lifeline)
            shutil.rmtree(self._dir, ignore_errors=True)

    # ---- requests -------------------------------------------------------------------------------
    def hold_place(self, priority: int) -> QueuePlace:
        """A place among the queued requests for one of `priority` about to be sent (see QueuePlace)."""
        return QueuePlace(self, priority)

    async def generate(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        params: SamplingParams,
        place: QueuePlace | None = None,  # the place its admission held, which its stream takes over
        sheddable: bool = True,  # whether the core may shed it from a full queue (EngineRequest)
    ) -> AsyncIterator[SeqOutput]:
        """Outputs of every choice of one request until all finish; aborts the request if left early."""
        if self._failure is not None:  # the engine died (fail_all), or the drain's time ran out
            raise self._failure()
        stream = _Stream(params.n, len(prompt_token_ids), params.priority)
        self._streams[request_id] = stream
        self._queue(stream, +1)
        if place is not None:
            place.hand_over(len(prompt_token_ids))
        self._send(
            EngineRequest(
                request_id=request_id, prompt_token_ids=prompt_token_ids, params=params, sheddable=sheddable
            )
        )
        try:
            while stream.open:
                items = [await stream.queue.get()]
                while not stream.queue.empty():  # the consumer is behind: take what waits in one go
                    items.append(stream.queue.get_nowait())
                for item in coalesced(items):
                    if not stream.open:
                        break
                    if isinstance(item, Exception):
                        raise item
                    if item is None:  # woken by abort()
                        continue
                    if item.finish_reason is not None:
                        stream.open.discard(item.index)
                    yield item
        finally:
            if stream.queued:
                self._queue(stream, -1)
            if self._streams.pop(request_id, None) is not None and stream.open and not self.dead:
                self._send(AbortRequest([request_id]))

    def abort(self, request_id: str, index: int | None = None) -> None:
        """Stop a request, or only its choice `index`; its generate() ends once no choice is left."""
        stream = self._streams.get(request_id)
        if stream is None:
            return
        if index is None:
            self._send(AbortRequest([request_id]))
            _end(stream)
        elif index in stream.open:
            stream.open.discard(index)
            self._send(AbortChoice(request_id, index))
            stream.queue.put_nowait(None)

    def abort_anywhere(self, request_id: str) -> None:
        """Stop a request that this or another API process sent (a Responses cancel): the core aborts it
        and tells the process that sent it, whose generate() then ends as after its own abort()."""
        self._send(AbortRequest([request_id], anywhere=True))

    def fail_all(self, error_of: Callable[[], Exception]) -> None:
        """Every request in flight, and any sent from now on, ends by raising a fresh `error_of()` in its
        generate() (which aborts it in the engine while the engine lives)."""
        self._failure = error_of
        for stream in self._streams.values():
            stream.queue.put_nowait(error_of())

    async def stats(self, patience: float) -> dict[str, Any]:
        """The engine's counters (running and waiting requests, KV cache and prefix cache use), and
        `requests`: each sequence in the engine with its state and token counts. The core answers
        between steps, so a long step (a large prefill on a CPU) holds the answer back: `patience` is
        how many seconds to wait before taking the core's last answer instead (its age in `stats_age_s`,
        counted from ready if it has not answered since: a core that hangs at once shows its age too)."""
        self._check_alive()
        waiter = self._ask_stats()
        try:
            return await asyncio.wait_for(asyncio.shield(waiter), patience)
        except TimeoutError:
            at, stats = self._last_stats
            return {**stats, "stats_age_s": round(time.monotonic() - at, 3)}

    def unanswered_for(self) -> float:
        """Seconds the core has left its oldest question unanswered (it answers between steps, so a core
        that hangs leaves it open); a question is asked if none is open, so that one idle is found too."""
        if not self._stats_waiters:
            self._ask_stats()
        return time.monotonic() - self._stats_waiters[0][0]

    # ---- plumbing -------------------------------------------------------------------------------
    def _ask_stats(self) -> asyncio.Future[dict[str, Any]]:
        waiter = asyncio.get_running_loop().create_future()
        # its error read here: a probe's question, or one whose asker stopped waiting, has nobody to read it
        waiter.add_done_callback(lambda done: done.cancelled() or done.exception())
        self._stats_waiters.append((time.monotonic(), waiter))
        self._send(StatsRequest())
        return waiter

    def _queue(self, stream: _Stream, sign: int) -> None:
        """Count `stream` into (+1) or out of (-1) the requests that wait for their first output."""
        stream.queued = sign > 0
        self.count_queued(stream.priority, sign, sign * stream.prompt_tokens)

    def _send(self, message: msgspec.Struct) -> None:
        # With no high-water mark a PUSH send never blocks: the returned future is already done.
        self._to_core.send(msgspec.msgpack.encode(message), copy=False)

    def _check_alive(self) -> None:
        if self.dead:
            raise EngineDeadError("the engine process has died")

    async def _receive(self) -> None:
        decoder = msgspec.msgpack.Decoder(FromCore)
        while True:
            message = decoder.decode(await self._from_core.recv(copy=False))
            match message:
                case StepOutputs(outputs=outputs):
                    for out in outputs:
                        if (stream := self._streams.get(out.request_id)) is not None:
                            if stream.queued:
                                self._queue(stream, -1)
                            stream.queue.put_nowait(out)
                case Aborted(request_id=rid):  # by another API process's cancel
                    if (stream := self._streams.get(rid)) is not None:
                        _end(stream)
                case Rejected(request_id=rid, message=text, param=param, shed=shed):
                    if (stream := self._streams.get(rid)) is not None:
                        stream.queue.put_nowait(RequestShed(text) if shed else RequestRejected(text, param))
                case EngineStats(stats=stats, requests=requests):
                    answer = self._keep_stats(stats, msgspec.to_builtins(requests))
                    _, waiter = self._stats_waiters.popleft()
                    if not waiter.done():
                        waiter.set_result(answer)
                case EngineReady(stats=stats):
                    self._keep_stats(stats, [])
                    self.ready = message
                    self._ready.set_result(message)
                    log.info("engine ready: %s, max_model_len %d", message.model_path, message.max_model_len)

    def _keep_stats(self, stats: dict[str, Any], requests: list[Any]) -> dict[str, Any]:
        """The core's fresh figures as `stats()` answers them, kept as its last ones."""
        answer = {**stats, "requests": requests, "stats_age_s": 0.0}
        self._last_stats = (time.monotonic(), answer)
        return answer

    async def _watch(self) -> None:
        """Wait for the core to exit; if that was not asked for, fail everything in flight."""
        code = None
        if self.link is None:
            code = await self._proc.wait()
            how = f"exit code {code}"
        else:
            await process_exit(self.link.core_pid)
            how = "the launcher started it and logs its exit code"
        if self._closing:
            return
        self.settings_refused = self.link is None and code == CORE_SETTINGS_REFUSED
        if self.settings_refused:
            log.error("the engine core refused its settings")
        else:
            log.error("engine core exited unexpectedly (%s)", how)
        self.dead = True
        message = f"the engine process died ({how})"
        error = EngineDeadError(message)
        if not self._ready.done():
            self._ready.set_exception(error)
        self.fail_all(lambda: EngineDeadError(message))
        while self._stats_waiters:
            if not (waiter := self._stats_waiters.popleft()[1]).done():
                waiter.set_exception(error)
        if self.on_death is not None:
            self.on_death()


def _end(stream: _Stream) -> None:
    """End a stream as an abort of the whole request does: its generate() returns."""
    stream.open.clear()
    stream.queue.put_nowait(None)


def core_command(
    config: EngineConfig, links: list[tuple[str, str]], parent_fd: int, core_args: tuple[str, ...]
) -> list[str]:
    """The engine core's command line: its config, a (requests, outputs) address pair per API process,
    the read end of its parent's lifeline, the time it is launched (its log says how long it took), and
    its own flags."""
    command = [sys.executable, "-m", "pyinfer.engine.core", "--config", encode_config(config)]
    for to_core, from_core in links:
        command += ["--input", to_core, "--output", from_core]
    return [*command, "--parent-fd", str(parent_fd), "--launched-at", repr(time.time()), *core_args]


def encode_config(config: Any) -> str:
    """A config dataclass as the JSON the other process decodes it from."""
    return msgspec.json.encode(dataclasses.asdict(config)).decode()


async def process_exit(pid: int) -> None:
    """Returns once process `pid` (not necessarily our child) has exited: a pidfd where the kernel
    offers one, else a look once a second."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    except OSError:  # no pidfd here (an old kernel, a seccomp profile)
        while _alive(pid):
            await asyncio.sleep(1.0)
        return
    loop = asyncio.get_running_loop()
    exited = loop.create_future()
    loop.add_reader(fd, lambda: exited.done() or exited.set_result(None))
    try:
        await exited
    finally:
        loop.remove_reader(fd)
        os.close(fd)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's now: ours is gone
        return False
    return True
