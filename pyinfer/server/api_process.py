"""One of several API processes (see api_servers.py): the usual app on the launcher's socket, its engine
client attached to the core the launcher started. Started by the launcher, not by hand."""

from __future__ import annotations

import argparse
import json
import sys

import msgspec

from pyinfer.config import EngineConfig
from pyinfer.engine.core_client import EngineLink
from pyinfer.logs import configure_logging
from pyinfer.server.config import ServerConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--server-config", required=True, help="ServerConfig as JSON")
    parser.add_argument("--engine-config", required=True, help="EngineConfig as JSON")
    parser.add_argument("--link", required=True, help="EngineLink as JSON")
    parser.add_argument("--fd", type=int, required=True, help="the listening socket")
    args = parser.parse_args()
    config = msgspec.json.decode(args.server_config, type=ServerConfig)
    engine_config = msgspec.json.decode(args.engine_config, type=EngineConfig)
    configure_logging(config.log_level, config.log_format, tag=f"[api-{args.index}] ")
    from pyinfer.server.app import create_app
    from pyinfer.server.launch import run_uvicorn

    app = create_app(config, engine_config, EngineLink(**json.loads(args.link)))
    sys.exit(run_uvicorn(app, config, fd=args.fd))


if __name__ == "__main__":
    main()
