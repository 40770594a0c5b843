"""`pyinfer serve`: the server's flags and its main (uvicorn with uvloop and httptools)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from types import FrameType

import uvicorn

from pyinfer.cli import engine_config_from_args, env_default
from pyinfer.server.config import ServerConfig
from pyinfer.server.context import ServerContext
from pyinfer.server.logs import configure_logging

log = logging.getLogger("pyinfer.server")


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    d = ServerConfig()
    g = parser.add_argument_group("server")
    g.add_argument("--host", default=env_default("HOST", d.host), help="env HOST")
    g.add_argument("--port", type=int, default=env_default("PORT", d.port, int), help="env PORT")
    g.add_argument(
        "--served-model-name",
        default=env_default("SERVED_MODEL_NAME", None),
        help="the model's name in the API (env SERVED_MODEL_NAME; default: the model file or folder name)",
    )
    g.add_argument(
        "--max-tokens",
        type=int,
        default=env_default("MAX_TOKENS", None, int),
        help="generation limit when a request sets none (env MAX_TOKENS; default: the context limit)",
    )
    g.add_argument(
        "--cors-origins",
        default=env_default("CORS_ORIGINS", ""),
        help="comma-separated allowed origins, or * (env CORS_ORIGINS; default: none)",
    )
    g.add_argument(
        "--log-level",
        default=env_default("LOG_LEVEL", d.log_level),
        choices=["debug", "info", "warning", "error"],
        type=str.lower,
        help="env LOG_LEVEL",
    )
    g.add_argument(
        "--log-format",
        default=env_default("LOG_FORMAT", d.log_format),
        choices=["text", "json"],
        help="env LOG_FORMAT",
    )
    g.add_argument(
        "--drain-timeout",
        type=float,
        default=env_default("DRAIN_TIMEOUT", d.drain_timeout, float),
        help="seconds in-flight requests may take to finish on SIGTERM/SIGINT (env DRAIN_TIMEOUT)",
    )
    g.add_argument(
        "--max-stored-responses",
        type=int,
        default=env_default("MAX_STORED_RESPONSES", d.max_stored_responses, int),
        help="Responses API: stored responses kept in memory, the oldest dropped first; 0 stores none "
        "(env MAX_STORED_RESPONSES)",
    )
    g.add_argument(
        "--stored-response-ttl",
        type=float,
        default=env_default("STORED_RESPONSE_TTL", d.stored_response_ttl, float),
        help="Responses API: seconds a stored response is kept (env STORED_RESPONSE_TTL)",
    )


def server_config_from_args(args: argparse.Namespace) -> ServerConfig:
    return ServerConfig(
        host=args.host,
        port=args.port,
        served_model_name=args.served_model_name,
        max_tokens=args.max_tokens,
        cors_origins=[o.strip() for o in args.cors_origins.split(",") if o.strip()],
        log_level=args.log_level,
        log_format=args.log_format,
        drain_timeout=args.drain_timeout,
        max_stored_responses=args.max_stored_responses,
        stored_response_ttl=args.stored_response_ttl,
    )


class DrainingServer(uvicorn.Server):
    """uvicorn that tells the app when a signal starts the drain, so new work gets a 503."""

    def __init__(self, config: uvicorn.Config, ctx: ServerContext):
        super().__init__(config)
        self.ctx = ctx
        ctx.on_fatal = self.stop

    def stop(self) -> None:
        self.should_exit = True

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if not self.ctx.draining:
            log.info("received %s: draining in-flight requests", signal.Signals(sig).name)
        self.ctx.draining = True
        super().handle_exit(sig, frame)


def serve_main(args: argparse.Namespace) -> None:
    from pyinfer.server.app import create_app

    config = server_config_from_args(args)
    configure_logging(config.log_level, config.log_format)
    try:
        app = create_app(config, engine_config_from_args(args))
    except (FileNotFoundError, ValueError) as e:
        log.error("%s", e)
        sys.exit(2)
    ctx: ServerContext = app.state.ctx
    uv_config = uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        loop="uvloop",
        http="httptools",
        log_config=None,  # ours, from configure_logging
        access_log=False,  # RequestContextMiddleware writes one line per request
        timeout_graceful_shutdown=config.drain_timeout,
    )
    # uvicorn re-raises the signal it drained for once it is done; by then we have shut down
    # cleanly and exit 0, so the re-raised signal must not kill us.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    DrainingServer(uv_config, ctx).run()
    if ctx.fatal_error:
        sys.exit(1)
