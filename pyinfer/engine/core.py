"""The engine-core process: LLMEngine in a loop, requests in and step outputs out over ZMQ.

Started as `python -m pyinfer.engine.core`, by AsyncEngineClient (one API process) or by the launcher
of several (--api-server-count): one link, a pair of sockets, per API process. Each request's outputs
go back over the link it came in on; a step's outputs leave as one message per link. It blocks on its
sockets while idle, steps while there is work, stops once every link has said Shutdown, and exits
when its parent dies (the end of a pipe it holds closes). Any link may abort any request (a Responses
cancel reaching another API process): the owning link hears of it. Each link hears how many requests of
the others wait for their first output, whenever that changes, to shed load against the whole queue.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from collections import OrderedDict

import msgspec
import zmq

from pyinfer.config import CORE_SETTINGS_REFUSED, EngineConfig, SettingsError
from pyinfer.engine.engine import LLMEngine
from pyinfer.engine.messages import (
    RECONNECT_MS,
    AbortChoice,
    Aborted,
    AbortRequest,
    EngineReady,
    EngineRequest,
    EngineStats,
    Rejected,
    RequestState,
    SeqOutput,
    Shutdown,
    StatsRequest,
    StepOutputs,
    ToCore,
)
from pyinfer.heap import freeze_heap
from pyinfer.logs import configure_logging

log = logging.getLogger("pyinfer.engine.core")

SHED = "the queue passed its bound, and this was the least urgent request waiting"
UNSEEN_ABORTS = 1024  # ids of aborted requests the core had not seen, remembered in case they come


class EngineCore:
    def __init__(
        self,
        engine: LLMEngine,
        links: list[tuple[str, str]],
        parent_fd: int,
        queue_bounds: tuple[int | None, int | None] = (None, None),
    ):
        """links: (input address, output address) of each API process; queue_bounds: the requests, and
        their prompt tokens, that may wait before the least urgent is shed (see shed)."""
        self.engine = engine
        self.queue_bounds = queue_bounds
        self.parent_fd = parent_fd
        self.ctx = zmq.Context()
        self.inputs: list[zmq.Socket] = []
        self.outputs: list[zmq.Socket] = []
        for input_addr, output_addr in links:
            pull = self.ctx.socket(zmq.PULL)
            pull.setsockopt(zmq.RCVHWM, 0)
            pull.connect(input_addr)
            push = self.ctx.socket(zmq.PUSH)
            push.setsockopt(zmq.SNDHWM, 0)
            push.setsockopt(zmq.RECONNECT_IVL, RECONNECT_MS)  # an API process's wait for our ready message
            push.setsockopt(zmq.RECONNECT_IVL_MAX, 0)  # stays this short: no backoff
            push.connect(output_addr)
            self.inputs.append(pull)
            self.outputs.append(push)
        self.open_links = set(range(len(links)))  # those that have not said Shutdown
        self.owner: dict[str, int] = {}  # request id -> the link it came in on, while the engine has it
        # A cancel through another API process may overtake the request it cancels (sent by its own
        # process a moment later): such a request is aborted as it arrives. Most ids here are of requests
        # that had finished, and never come; request ids are unique.
        self.unseen_aborts: OrderedDict[str, None] = OrderedDict()
        self.decoder = msgspec.msgpack.Decoder(ToCore)
        self.encoder = msgspec.msgpack.Encoder()
        self.running = True

    def send(self, message: msgspec.Struct, link: int) -> None:
        self.outputs[link].send(self.encoder.encode(message), copy=False)

    def run(self) -> None:
        poller = zmq.Poller()
        for socket in self.inputs:
            poller.register(socket, zmq.POLLIN)
        poller.register(self.parent_fd, zmq.POLLIN)  # readable (EOF) once the parent is gone
        while self.running:
            busy = self.engine.has_unfinished()
            events = dict(poller.poll(0 if busy else None))
            if self.parent_fd in events:
                log.warning("parent process is gone; engine core exits")
                return
            for link, socket in enumerate(self.inputs):
                if socket in events:
                    self.drain_input(link)
            self.shed()
            if self.running and self.engine.has_unfinished():
                self.send_outputs(self.engine.step())
                for rid, error in self.engine.pop_rejected():
                    self.reject(rid, error)
                self.shed()  # a constrained request joins the queue once its grammar is compiled

    def shed(self) -> None:
        """The requests past the queue's bounds leave it, the least urgent first: each API process refuses
        a request when those at least as urgent fill the bounds, so one admitted past them is more urgent
        than some that wait, and takes a place of theirs. Their API processes answer 503 queue_full."""
        if self.queue_bounds == (None, None):
            return
        for rid in self.engine.shed_past(*self.queue_bounds):
            if (link := self.owner.pop(rid, None)) is not None:
                self.send(Rejected(request_id=rid, message=SHED, shed=True), link)

    def send_outputs(self, outputs: list[SeqOutput]) -> None:
        """One message per link with outputs in this step; requests that have left the engine are
        forgotten (an output of one whose link is unknown is dropped: its API process let it go)."""
        by_link: dict[int, list[SeqOutput]] = {}
        finished = set()  # forgotten only after the loop: several choices of one may end in this step
        for out in outputs:
            link = self.owner.get(out.request_id)
            if link is not None:
                by_link.setdefault(link, []).append(out)
                if out.finish_reason is not None:
                    finished.add(out.request_id)
        for rid in finished:
            if not self.engine.has_request(rid):
                del self.owner[rid]
        for link, outs in by_link.items():
            self.send(StepOutputs(outs), link)

    def abort(self, request_id: str, link: int, anywhere: bool) -> None:
        """Stop a request, whichever link asks; its owner, if another, hears that it ended."""
        owner = self.owner.pop(request_id, None)
        if owner is None:  # it has finished, or (another link's) has not come yet
            if anywhere:  # remembered only for a cancel through another process: a link's own come late
                self.unseen_aborts[request_id] = None
                if len(self.unseen_aborts) > UNSEEN_ABORTS:
                    self.unseen_aborts.popitem(last=False)
            return
        self.engine.abort(request_id)
        if owner != link:
            self.send(Aborted(request_id), owner)

    def reject(self, request_id: str, error: ValueError) -> None:
        """Tell the server the engine refused a request, naming the field at fault where known."""
        link = self.owner.pop(request_id, None)
        if link is not None:
            message = Rejected(request_id=request_id, message=str(error), param=getattr(error, "param", None))
            self.send(message, link)

    def drain_input(self, link: int) -> None:
        """Handle every message waiting on a link, without blocking."""
        while True:
            try:
                data = self.inputs[link].recv(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            self.handle(self.decoder.decode(data.buffer), link)

    def handle(self, message: ToCore, link: int) -> None:
        match message:
            case EngineRequest(request_id=rid, prompt_token_ids=ids, params=params, sheddable=sheddable):
                if rid in self.unseen_aborts:  # cancelled through another API process already
                    del self.unseen_aborts[rid]
                    self.send(Aborted(rid), link)
                    return
                if rid in self.owner:  # ids are unique: a second one must not take the first's owner
                    self.send(
                        Rejected(request_id=rid, message=f"request id {rid} is in use", param=None), link
                    )
                    return
                self.owner[rid] = link
                try:
                    self.engine.add_request(rid, ids, params, sheddable)
                except ValueError as e:
                    self.reject(rid, e)
            case AbortRequest(request_ids=ids, anywhere=anywhere):
                for rid in ids:
                    self.abort(rid, link, anywhere)
            case AbortChoice(request_id=rid, index=index):
                self.engine.abort(rid, index)
                if not self.engine.has_request(rid):
                    self.owner.pop(rid, None)
            case StatsRequest():
                states = [RequestState(**s) for s in self.engine.request_states()]
                self.send(EngineStats(self.stats(), states), link)
            case Shutdown():
                self.open_links.discard(link)
                self.running = bool(self.open_links)

    def stats(self) -> dict[str, int | float]:
        bm = self.engine.block_manager
        return {**self.engine.stats(), "kv_cache_free_blocks": bm.num_free_blocks}

    def ready_message(self) -> EngineReady:
        e = self.engine
        return EngineReady(
            model_path=e.model_path,
            load_format=e.load_format,
            device=str(e.device),
            max_model_len=e.max_model_len,
            vocab_size=e.model_config.vocab_size,
            eos_token_ids=list(e.model_config.eos_token_ids),
            block_size=e.config.block_size,
            num_kv_blocks=e.block_manager.num_blocks,
            stats=self.stats(),
        )

    def close(self) -> None:
        self.engine.close()
        for socket in self.inputs:
            socket.close(linger=0)
        for socket in self.outputs:
            socket.close(linger=1000)  # let the last messages leave
        self.ctx.term()


def main() -> int | None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True, help="EngineConfig as JSON")
    parser.add_argument(
        "--input", required=True, action="append", help="ZMQ address to receive requests on, per link"
    )
    parser.add_argument("--output", required=True, action="append", help="ZMQ address to send outputs to")
    parser.add_argument("--parent-fd", type=int, required=True, help="read end of a pipe the parent holds")
    parser.add_argument("--launched-at", type=float, required=True, help="the launcher's time.time() then")
    parser.add_argument("--max-queued-requests", type=int, help="requests that may wait before one is shed")
    parser.add_argument("--max-queued-tokens", type=int, help="their prompt tokens")
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--log-format", default="text", choices=["text", "json"])
    args = parser.parse_args()
    configure_logging(args.log_level, args.log_format, process="engine-core")
    # Stopped by its API processes (Shutdown, once they have drained) or their launcher's death, never by
    # a signal to the whole group (systemd's default stop): that would cut the streams they drain.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(
            sig,
            lambda sig, _: log.info(
                "%s ignored: the API server drains, then stops us", signal.Signals(sig).name
            ),
        )
    config = msgspec.json.decode(args.config, type=EngineConfig)
    try:
        engine = LLMEngine(config)
    except SettingsError as e:  # one line, and an exit code the server passes on as a bad flag's
        log.error("%s", e)
        return CORE_SETTINGS_REFUSED
    engine.warm_up()
    if len(args.input) != len(args.output):
        parser.error("one --output for each --input")
    links = list(zip(args.input, args.output, strict=True))
    core = EngineCore(engine, links, args.parent_fd, (args.max_queued_requests, args.max_queued_tokens))
    freeze_heap()
    try:
        for link in range(len(core.outputs)):
            core.send(core.ready_message(), link)
        # the lines before give the load, the KV cache, the graphs and the warm-up; the rest is the
        # interpreter's start, imports and the device's
        log.info(
            "engine core ready (pid %d), %.1fs after its launch", os.getpid(), time.time() - args.launched_at
        )
        core.run()
    finally:
        core.close()


if __name__ == "__main__":
    sys.exit(main())
