"""The engine-core process: LLMEngine in a loop, requests in and step outputs out over ZMQ.

Started by AsyncEngineClient as `python -m pyinfer.engine.core`. It blocks on its sockets while idle,
steps while there is work, and exits when its parent dies (the end of a pipe it holds closes).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import msgspec
import zmq

from pyinfer.config import EngineConfig
from pyinfer.engine.engine import LLMEngine, freeze_heap
from pyinfer.engine.messages import (
    AbortChoice,
    AbortRequest,
    EngineReady,
    EngineRequest,
    EngineStats,
    Rejected,
    RequestState,
    Shutdown,
    StatsRequest,
    StepOutputs,
    ToCore,
)
from pyinfer.logs import configure_logging

log = logging.getLogger("pyinfer.engine.core")


class EngineCore:
    def __init__(self, engine: LLMEngine, input_addr: str, output_addr: str, parent_fd: int):
        self.engine = engine
        self.parent_fd = parent_fd
        self.ctx = zmq.Context()
        self.input = self.ctx.socket(zmq.PULL)
        self.input.setsockopt(zmq.RCVHWM, 0)
        self.input.connect(input_addr)
        self.output = self.ctx.socket(zmq.PUSH)
        self.output.setsockopt(zmq.SNDHWM, 0)
        self.output.connect(output_addr)
        self.decoder = msgspec.msgpack.Decoder(ToCore)
        self.encoder = msgspec.msgpack.Encoder()
        self.running = True

    def send(self, message: msgspec.Struct) -> None:
        self.output.send(self.encoder.encode(message), copy=False)

    def run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.input, zmq.POLLIN)
        poller.register(self.parent_fd, zmq.POLLIN)  # readable (EOF) once the parent is gone
        while self.running:
            busy = self.engine.has_unfinished()
            events = dict(poller.poll(0 if busy else None))
            if self.parent_fd in events:
                log.warning("parent process is gone; engine core exits")
                return
            if self.input in events:
                self.drain_input()
            if self.running and self.engine.has_unfinished():
                outputs = self.engine.step()
                if outputs:
                    self.send(StepOutputs(outputs))
                for rid, error in self.engine.pop_rejected():
                    self.reject(rid, error)

    def reject(self, request_id: str, error: ValueError) -> None:
        """Tell the server the engine refused a request, naming the field at fault where known."""
        self.send(Rejected(request_id=request_id, message=str(error), param=getattr(error, "param", None)))

    def drain_input(self) -> None:
        """Handle every message waiting on the socket, without blocking."""
        while True:
            try:
                data = self.input.recv(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            self.handle(self.decoder.decode(data.buffer))

    def handle(self, message: ToCore) -> None:
        match message:
            case EngineRequest(request_id=rid, prompt_token_ids=ids, params=params):
                try:
                    self.engine.add_request(rid, ids, params)
                except ValueError as e:
                    self.reject(rid, e)
            case AbortRequest(request_ids=ids):
                for rid in ids:
                    self.engine.abort(rid)
            case AbortChoice(request_id=rid, index=index):
                self.engine.abort(rid, index)
            case StatsRequest():
                states = [RequestState(**s) for s in self.engine.request_states()]
                self.send(EngineStats(self.stats(), states))
            case Shutdown():
                self.running = False

    def stats(self) -> dict[str, float]:
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
        )

    def close(self) -> None:
        self.engine.close()
        self.input.close(linger=0)
        self.output.close(linger=1000)  # let the last messages leave
        self.ctx.term()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True, help="EngineConfig as JSON")
    parser.add_argument("--input", required=True, help="ZMQ address to receive requests on")
    parser.add_argument("--output", required=True, help="ZMQ address to send outputs to")
    parser.add_argument("--parent-fd", type=int, required=True, help="read end of a pipe the parent holds")
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--log-format", default="text", choices=["text", "json"])
    args = parser.parse_args()
    configure_logging(args.log_level, args.log_format, tag="[engine-core] ")
    config = msgspec.json.decode(args.config, type=EngineConfig)
    engine = LLMEngine(config)
    engine.warm_up()
    core = EngineCore(engine, args.input, args.output, args.parent_fd)
    freeze_heap()
    try:
        core.send(core.ready_message())
        log.info("engine core ready (pid %d)", os.getpid())
        core.run()
    finally:
        core.close()


if __name__ == "__main__":
    sys.exit(main())
