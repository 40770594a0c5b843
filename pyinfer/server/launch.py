"""`pyinfer serve`: the server's main (uvicorn with uvloop and httptools, draining on SIGTERM/SIGINT)."""

from __future__ import annotations

import argparse
import asyncio
import functools
import ipaddress
import logging
import signal
import socket
import sys
from dataclasses import replace
from pathlib import Path
from types import FrameType

import uvicorn
from fastapi import FastAPI

from pyinfer.config import SETTINGS_REFUSED, EngineConfig, engine_config_from_args
from pyinfer.logs import configure_logging
from pyinfer.model_files import resolve_model
from pyinfer.server.auth import ApiKeys
from pyinfer.server.config import (
    ServerConfig,
    cuda_device_count,
    default_api_server_count,
    server_config_from_args,
)
from pyinfer.server.context import ServerContext
from pyinfer.server.http_protocol import BoundedHttpToolsProtocol

log = logging.getLogger("pyinfer.server")


# Seconds the HTTP server waits past the drain timeout for the streams that were then ended to send their
# error events, before it cancels what is left.
END_GRACE = 2.0


class DrainingServer(uvicorn.Server):
    """uvicorn that tells the app when a signal starts the drain, so new work gets a 503, and ends the
    requests still in flight once the drain timeout runs out."""

    def __init__(self, config: uvicorn.Config, ctx: ServerContext, drain_timeout: float):
        super().__init__(config)
        self.ctx = ctx
        self.drain_timeout = drain_timeout
        self.interrupts = 0  # SIGINTs received after the drain began
        self.forced = False  # stopped without ending what was in flight
        ctx.on_fatal = self.stop

    def stop(self) -> None:
        self.should_exit = True

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """The first signal drains. Ctrl-C again (SIGINT: systemd's stop may send every process SIGTERM
        while the launcher passes its own on, so a second SIGTERM means nothing) ends what is in flight
        now, each request with its error, as the drain timeout would; a third stops at once."""
        name = signal.Signals(sig).name
        loop = asyncio.get_running_loop()  # a signal handler runs on the loop's thread, between its steps
        if not self.ctx.draining:
            log.info("received %s: draining in-flight requests", name)
            loop.call_soon_threadsafe(loop.call_later, self.drain_timeout, self.ctx.end_in_flight)
            self.ctx.draining = True
            super().handle_exit(sig, frame)
            return
        if sig != signal.SIGINT:
            return
        self.interrupts += 1
        if self.interrupts == 1:
            log.warning("received SIGINT again: ending the requests in flight now")
            loop.call_soon_threadsafe(self.ctx.end_in_flight, "a second Ctrl-C asked to stop now")
        else:
            log.warning("received SIGINT a third time: stopping at once")
            self.forced = True
            super().handle_exit(sig, frame)  # uvicorn's forced exit


def serve_main(args: argparse.Namespace) -> None:
    from pyinfer.server.app import create_app

    config = server_config_from_args(args)
    configure_logging(config.log_level, config.log_format)
    try:  # what stops a start, before anything starts: exit 2, with the reason
        engine_config = engine_config_from_args(args)
        check_engine_start(engine_config)
        if config.api_server_count is None:
            config = replace(config, api_server_count=default_api_server_count(engine_config.device))
        keys = ApiKeys(config.api_keys, config.api_key_file)
        app = create_app(config, engine_config) if config.api_server_count == 1 else None
        listeners = bind_listeners(config)
        log_key_policy(keys, config, listeners)
    except (OSError, ValueError) as e:  # a missing model, bad keys, a port in use, a value out of range
        log.error("%s", e)
        sys.exit(SETTINGS_REFUSED)
    if app is None:
        from pyinfer.server.api_servers import serve_with_api_processes

        sys.exit(serve_with_api_processes(config, engine_config, listeners))
    sys.exit(run_uvicorn(app, config, sockets=listeners))


def check_engine_start(config: EngineConfig) -> None:
    """What the engine core would fail on once started (after seconds of loading, in its own process):
    a model or tokenizer not there, a GPU asked for where none is seen."""
    resolve_model(config.model, config.load_format)
    if config.tokenizer is not None and not Path(config.tokenizer).exists():
        raise FileNotFoundError(f"--tokenizer {config.tokenizer!r} not found: give a tokenizer folder")
    if config.device is not None and config.device.startswith("cuda"):
        index = int(config.device.partition(":")[2] or 0)
        if (count := cuda_device_count()) <= index:
            seen = {0: "no GPU is", 1: "1 GPU is"}.get(count, f"{count} GPUs are")
            raise ValueError(f"--device {config.device}: {seen} visible to a CUDA build of torch here")


def bind_listeners(config: ServerConfig) -> list[socket.socket]:
    """Sockets listening on each address of the config's host (a name such as localhost may stand for
    both 127.0.0.1 and ::1), at its port."""
    try:
        found = socket.getaddrinfo(config.host, config.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        listeners = []
        for family, *_, address in dict.fromkeys(found):
            listeners.append(socket.create_server(address, family=family, backlog=2048))
    except OSError as e:
        raise OSError(f"cannot listen on {config.host}:{config.port}: {e.strerror or e}") from e
    for sock in listeners:
        host, port = sock.getsockname()[:2]
        log.info("listening on http://%s:%d", f"[{host}]" if ":" in host else host, port)
    return listeners


def log_key_policy(keys: ApiKeys, config: ServerConfig, listeners: list[socket.socket]) -> None:
    """Say once at start whether a key is needed, so that keys that did not arrive are seen."""
    if keys.enabled and not keys.count:
        log.warning("API keys required, but %s: every request that needs one is refused", keys.describe())
    elif keys.enabled:
        log.info("API keys required: %s", keys.describe())
    elif config.protect_metrics:
        log.warning("--protect-metrics without API keys: /metrics and every other route are open")
    elif not all(ipaddress.ip_address(sock.getsockname()[0]).is_loopback for sock in listeners):
        log.warning("no API keys: every route is open to whoever reaches %s", config.host)


def run_uvicorn(app: FastAPI, config: ServerConfig, sockets: list[socket.socket]) -> int:
    """Serve the app on `sockets` (bound by this process or the launcher) until a signal drains it or
    something it needs is gone; returns the exit code."""
    ctx: ServerContext = app.state.ctx
    uv_config = uvicorn.Config(
        app,
        loop="uvloop",
        http=functools.partial(
            BoundedHttpToolsProtocol,
            read_timeout_s=config.read_timeout,
            on_refusal=ctx.metrics.refused_unread,
        ),
        log_config=None,  # ours, from configure_logging
        access_log=False,  # RequestContextMiddleware writes one line per request
        timeout_graceful_shutdown=config.drain_timeout + END_GRACE,
    )
    # uvicorn re-raises the signal it drained for once it is done; by then we have shut down
    # cleanly and exit 0, so the re-raised signal must not kill us.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    server = DrainingServer(uv_config, ctx, config.drain_timeout)
    server.run(sockets=sockets)
    if ctx.engine.settings_refused:  # a start that could not go ahead, like a bad flag's
        return SETTINGS_REFUSED
    return 1 if ctx.fatal_error or server.forced else 0
