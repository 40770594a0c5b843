"""`pyinfer bench latency | throughput | serve`."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def add_bench_subcommands(parser: argparse.ArgumentParser, add_engine_arguments: Callable) -> None:
    from pyinfer.bench import latency, serve, throughput

    sub = parser.add_subparsers(dest="bench", required=True)
    for module in (latency, throughput):
        p = sub.add_parser(module.__name__.rsplit(".", 1)[-1], help=module.__doc__)
        add_engine_arguments(p)
        module.add_arguments(p)
        p.set_defaults(func=module.main, command_parser=p)
    p = sub.add_parser("serve", help=serve.__doc__)
    serve.add_arguments(p)
    p.set_defaults(func=serve.main, command_parser=p)
