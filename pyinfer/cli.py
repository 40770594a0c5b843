"""pyinfer serve | generate | chat | bench. Every flag can also be set by an environment variable
(PYINFER_<FLAG>; `pyinfer <command> --help` names each)."""

from __future__ import annotations

import argparse
import itertools
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NoReturn

from pyinfer.args import add_config_arguments, check_variables, mistyped_variables, option
from pyinfer.config import add_engine_arguments, engine_config_from_args
from pyinfer.generation_config import GENERATION_CONFIG_HELP
from pyinfer.logs import JsonFormatter


@dataclass
class SamplingDefaults:
    """What `generate` and `chat` sample with where a flag leaves it out (also from the environment)."""

    max_tokens: int = field(
        default=256, metadata=option("tokens to generate at most", aliases=("MAX_TOKENS",))
    )
    generation_config: str = field(
        default="auto", metadata=option(GENERATION_CONFIG_HELP, aliases=("GENERATION_CONFIG",))
    )


def add_sampling_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("sampling")
    add_config_arguments(g, SamplingDefaults)
    g.add_argument("--temperature", type=float, default=None, help="default: the model's")
    g.add_argument("--top-p", type=float, default=None, help="default: the model's")
    g.add_argument("--top-k", type=int, default=None, help="default: the model's")
    g.add_argument("--seed-sampling", dest="sampling_seed", type=int, default=None, help="per-request seed")


def sampling_params_from_args(args: argparse.Namespace):
    """The flags given, over the model's sampling defaults."""
    from pyinfer.generation_config import generation_defaults, with_defaults
    from pyinfer.model_files import resolve_model
    from pyinfer.sampling_params import SamplingParams

    defaults = generation_defaults(args.generation_config, *resolve_model(args.model, args.load_format))
    fields = with_defaults(
        defaults,
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        seed=args.sampling_seed,
    )
    return SamplingParams(**fields)


def cmd_serve(args: argparse.Namespace) -> None:
    from pyinfer.server.launch import serve_main  # the HTTP stack is imported only to serve

    serve_main(args)


def cmd_generate(args: argparse.Namespace) -> None:
    from pyinfer.engine.llm import LLM

    llm = LLM(**vars(engine_config_from_args(args)))
    params = sampling_params_from_args(args)
    prompt = [{"role": "user", "content": args.prompt}] if args.chat else args.prompt
    for piece in llm.stream(prompt, params):
        print(piece, end="", flush=True)
    print()


def cmd_chat(args: argparse.Namespace) -> None:
    from pyinfer.engine.llm import LLM

    llm = LLM(**vars(engine_config_from_args(args)))
    params = sampling_params_from_args(args)
    messages = [{"role": "system", "content": args.system}] if args.system else []
    print("Chatting with the model. Empty line or Ctrl-D to quit, /reset to start over.", file=sys.stderr)
    while True:
        try:
            line = input("\n> ")
        except (EOFError, KeyboardInterrupt):
            print()
            return
        if not line.strip():
            return
        if line.strip() == "/reset":
            messages = messages[:1] if args.system else []
            continue
        messages.append({"role": "user", "content": line})
        reply = []
        try:
            for piece in llm.stream(messages, params):
                reply.append(piece)
                print(piece, end="", flush=True)
        except KeyboardInterrupt:
            pass
        print()
        messages.append({"role": "assistant", "content": "".join(reply)})


class CommandLineError(Exception):
    """A mistake on the command line; `log_format`: the format its command logs in by default."""

    def __init__(self, line: str, log_format: str | None):
        super().__init__(line)
        self.log_format = log_format


class OneLineErrors(argparse.ArgumentParser):
    """A mistake on the command line is one line naming the command (`main` writes it in the log's format);
    its usage, some fifty flags for `serve`, is left to `--help`."""

    def error(self, message: str) -> NoReturn:
        line = f"{self.prog}: error: {message} (see {self.prog} --help)"
        raise CommandLineError(line, self.get_default("log_format"))  # the environment's, where it has one


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser for the command line `argv` (None: for any). The benchmarks' own options are added only
    for `pyinfer bench`: their modules import torch, which would hold every `pyinfer serve` back seconds
    before it launches the engine core."""
    parser = OneLineErrors(prog="pyinfer", description=__doc__)  # its commands' parsers are of its class
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="OpenAI-compatible HTTP server with the web UI")
    add_engine_arguments(serve)
    from pyinfer.server.config import add_server_arguments

    add_server_arguments(serve)
    serve.set_defaults(func=cmd_serve, command_parser=serve)  # each command's parser: its usage in errors

    gen = sub.add_parser("generate", help="complete one prompt and print the text as it comes")
    gen.add_argument("prompt")
    gen.add_argument("--chat", action="store_true", help="wrap the prompt in the chat template")
    add_engine_arguments(gen)
    add_sampling_arguments(gen)
    gen.set_defaults(func=cmd_generate, command_parser=gen)

    chat = sub.add_parser("chat", help="interactive chat in the terminal")
    chat.add_argument("--system", default=None, help="system prompt")
    add_engine_arguments(chat)
    add_sampling_arguments(chat)
    chat.set_defaults(func=cmd_chat, command_parser=chat)

    bench = sub.add_parser("bench", help="benchmarks: latency, throughput, serve")
    bench.set_defaults(command_parser=bench)
    if argv is None or list(argv[:1]) == ["bench"]:
        from pyinfer.bench import add_bench_subcommands

        add_bench_subcommands(bench, add_engine_arguments)

    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Run the command; a mistake in what it was given is one line on stderr and exit code 2, as argparse
    gives for a bad flag, and Ctrl-C is exit code 130, never a traceback."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args, unknown = build_parser(argv).parse_known_args(argv)
        if unknown:  # told by the command's own parser, not the top level's
            args.command_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    except CommandLineError as e:
        _stop(argparse.Namespace(log_format=_flag_value(argv, "--log-format") or e.log_format), str(e))
    try:
        check_variables(args)  # the chosen command's flags only
        for name, meant in mistyped_variables():
            _warn(args, f"{name} is not a setting (did you mean {meant}?)")
        args.func(args)
    except KeyboardInterrupt:
        sys.exit(130)
    except (FileNotFoundError, ValueError) as e:  # a missing model or a value the engine cannot take
        _stop(args, f"pyinfer {args.command}: error: {e}")
    except SystemExit as e:
        if not isinstance(e.code, str):
            raise
        said = e.code.removeprefix("error: ")  # a setting's own message, shaped as argparse's
        _stop(args, f"pyinfer {args.command}: error: {said}")


def _flag_value(argv: list[str], flag: str) -> str | None:
    """The value `argv` gives `flag` (`--flag value` or `--flag=value`), the last where it is given twice."""
    value = None
    for arg, following in itertools.pairwise([*argv, None]):
        if arg == flag:
            value = following
        elif arg.startswith(f"{flag}="):
            value = arg.partition("=")[2]
    return value


def _say(args: argparse.Namespace, level: int, message: str, line: str) -> None:
    """`message` on stderr before logging is set up: a JSON record where the log is JSON (a log shipper
    reads JSON lines only), else `line`."""
    if getattr(args, "log_format", "text") == "json":
        record = logging.LogRecord("pyinfer", level, __file__, 0, message, None, None)
        print(JsonFormatter().format(record), file=sys.stderr)
    else:
        print(line, file=sys.stderr)


def _warn(args: argparse.Namespace, message: str) -> None:
    _say(args, logging.WARNING, message, f"pyinfer {args.command}: warning: {message}")


def _stop(args: argparse.Namespace, message: str) -> NoReturn:
    _say(args, logging.ERROR, message, message)
    sys.exit(2)


if __name__ == "__main__":
    main()
