"""One of several API processes (see api_servers.py): the usual app on the launcher's socket, its engine
client attached to the core the launcher started. Started by the launcher, not by hand: its settings
come on stdin (they hold the API keys, which a command line would show every local user)."""

from __future__ import annotations

import argparse
import signal
import socket
import sys

import msgspec

from pyinfer.config import EngineConfig
from pyinfer.engine.core_client import EngineLink
from pyinfer.logs import configure_logging
from pyinfer.server.config import ServerConfig


class Spec(msgspec.Struct):
    """What the launcher tells an API process."""

    index: int
    server: ServerConfig
    engine: EngineConfig
    link: EngineLink
    launcher_pid: int
    shared_state: str  # the database of stored responses and rate limits the API processes share


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--fd", type=int, action="append", required=True, help="a listening socket (repeated)"
    )
    args = parser.parse_args()
    # Until uvicorn's handlers are in, a signal the launcher passes on stops this process quietly (it is
    # counted as clean once a stop was asked for): nothing here has a request to drain yet.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    spec = msgspec.json.decode(sys.stdin.buffer.read(), type=Spec)
    configure_logging(spec.server.log_level, spec.server.log_format, process=f"api-{spec.index}")
    from pyinfer.server.app import create_app
    from pyinfer.server.launch import run_uvicorn

    app = create_app(spec.server, spec.engine, spec.link, spec.launcher_pid, spec.shared_state)
    # Ready, then, when the engine is (its EngineReady reaches every API process at once): none answers
    # a 503 while another, ready, has told a load balancer /ready.
    app.state.ctx.load_tokenizer()
    listeners = [socket.socket(fileno=fd) for fd in args.fd]  # their own family (TCP: TCP_NODELAY)
    sys.exit(run_uvicorn(app, spec.server, sockets=listeners))


if __name__ == "__main__":
    main()
