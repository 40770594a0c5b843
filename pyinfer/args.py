"""Command-line flags made from the config dataclasses: a field with `option(...)` metadata is a flag
`--field-name` whose default comes from the environment variable PYINFER_FIELD_NAME (or an older bare
name kept as an alias), else from the field's own default. Torch-free; below cli, server and bench."""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

ENV_PREFIX = "PYINFER_"
OPTION_VARIABLES: set[str] = set()  # every flag's PYINFER_ variable, gathered as the parsers are built


@dataclass(frozen=True)
class Option:
    """How a config field is given on the command line and in the environment."""

    help: str
    aliases: tuple[str, ...] = ()  # older environment names still read, after PYINFER_*
    choices: tuple[str, ...] | None = None
    negated: str | None = None  # a true-by-default field switched off by this flag, e.g. --no-overlap
    repeated: bool = False  # a list: the flag repeats; its variable separates items with commas
    flag: str | None = None  # the flag's name where it is not the field's, e.g. --api-key for api_keys
    parse: Callable[[str], Any] | None = None  # how a value is read, where not by the field's type
    # a key, or where keys come from: its variable set but empty (or, a list, with an empty item) is a
    # secret that came through empty, and must not leave the server open
    guards: bool = False


class BadVariable(NamedTuple):
    """A flag's default whose variable did not parse: an error once that flag's command runs (a bad
    PYINFER_PORT stops `pyinfer serve`, not `pyinfer generate`)."""

    message: str


def check_variables(args: argparse.Namespace) -> None:
    """Stop, naming the variable, if any of the command's flags took a default that did not parse (a
    repeated flag's variable, kept beside it as `<name>_env`, only where the flag was not given)."""
    for name, value in vars(args).items():
        overridden = name.endswith("_env") and getattr(args, name.removesuffix("_env"), None) is not None
        if isinstance(value, BadVariable) and not overridden:
            raise SystemExit(value.message)


def mistyped_variables() -> list[tuple[str, str]]:
    """(name, the flag's variable it likely meant) for each PYINFER_ variable set that no flag reads but
    one nearly does: a typo would otherwise change nothing in silence. (Others, such as the kernels'
    switches, are read where they apply.)"""
    unread = [
        name for name in sorted(os.environ) if name.startswith(ENV_PREFIX) and name not in OPTION_VARIABLES
    ]
    return [
        (name, close[0])
        for name in unread
        if (close := difflib.get_close_matches(name, OPTION_VARIABLES, n=1, cutoff=0.85))
    ]


def option(help: str, **kwargs: Any) -> dict[str, Option]:
    """A field's metadata: `field(default=..., metadata=option("what it does"))`."""
    return {"option": Option(help, **kwargs)}


def env_name(name: str) -> str:
    """PYINFER_MAX_NUM_SEQS for max_num_seqs (and PYINFER_NO_OVERLAP for the flag no-overlap)."""
    return ENV_PREFIX + name.replace("-", "_").upper()


def env_value(names: tuple[str, ...], keep_empty: bool = False) -> tuple[str, str] | None:
    """(name, value) of the first of `names` set to something in the environment (or, `keep_empty`, set
    at all)."""
    for name in names:
        value = os.environ.get(name)
        if value or (keep_empty and value is not None):
            return name, value
    return None


def env_default(
    names: tuple[str, ...],
    default: Any,
    kind: Callable[[str], Any],
    choices: tuple[str, ...] | None = None,
    guards: bool = False,
) -> Any:
    """The flag's default: the first variable of `names` that is set, read as `kind` (and one of
    `choices`, where given), else `default`; a BadVariable where the variable does not parse, or (a
    field that `guards` the server) is set but empty."""
    found = env_value(names, keep_empty=guards)
    if found is None:
        return default
    name, value = found
    items = value.split(",") if kind is list else [value]
    if guards and not all(item.strip() for item in items):  # its value is a secret: not in the message
        empty = [str(i + 1) for i, item in enumerate(items) if not item.strip()]
        if len(empty) == len(items):
            return BadVariable(f"environment variable {name} is empty")
        which = f"{'items' if len(empty) > 1 else 'item'} {', '.join(empty)}"
        return BadVariable(f"environment variable {name} holds an empty item ({which})")
    try:
        if kind is bool:
            if value.lower() not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                raise ValueError(value)
            return value.lower() in ("1", "true", "yes", "on")
        if kind is list:
            return [item.strip() for item in value.split(",") if item.strip()]
        parsed = kind(value)
        if choices is not None and parsed not in choices:
            raise ValueError(value)
        return parsed
    except ValueError:
        # e.g. Kubernetes' service links set PYINFER_PORT=tcp://10.0.0.1:8000 for a Service named pyinfer
        what = f"one of {', '.join(choices)}" if choices else f"a valid {getattr(kind, '__name__', 'value')}"
        return BadVariable(f"environment variable {name}={value!r} is not {what}")


def env_switch(name: str) -> bool | None:
    """A switch read from the environment outside the flags (as the kernels' are): true, false, or None
    where unset; a value that is neither stops the start, naming it."""
    value = env_default((name,), None, bool)
    if isinstance(value, BadVariable):
        raise SystemExit(value.message)
    return value


def add_config_arguments(group: argparse._ArgumentGroup, config: type) -> None:
    """A flag for every field of the dataclass `config` that has an option."""
    hints = typing.get_type_hints(config)
    for field in dataclasses.fields(config):
        opt: Option | None = field.metadata.get("option")
        if opt is None:
            continue
        kind = opt.parse or _base_type(hints[field.name])
        default = _default(field)
        flag = opt.negated or _field_flag(field)
        names = (env_name(flag[2:]), *opt.aliases)
        OPTION_VARIABLES.add(names[0])
        env = " or ".join(names)
        if opt.negated is not None:  # on by default: the flag (or the variable, set true) turns it off
            turned_off = env_default(names, not default, bool)
            group.add_argument(
                opt.negated,
                dest=field.name,
                action="store_false",
                default=turned_off if isinstance(turned_off, BadVariable) else not turned_off,
                help=f"{opt.help} (env {env})",
            )
        elif kind is bool:
            group.add_argument(
                flag,
                action="store_true",
                default=env_default(names, default, bool),
                help=f"{opt.help} (env {env})",
            )
        elif opt.repeated:
            group.add_argument(
                flag,
                dest=field.name,
                metavar=flag[2:].upper().replace("-", "_"),
                action="append",
                default=None,
                help=f"{opt.help} (env {env}, comma-separated)",
            )
            from_env = env_default(names, list(default or []), list, guards=opt.guards)
            group.set_defaults(**{f"{field.name}_env": from_env})
        else:
            shown = f"; default {default}" if default not in (None, "") else ""
            group.add_argument(
                flag,
                dest=field.name,
                type=kind,
                choices=opt.choices,
                default=env_default(names, default, kind, opt.choices, opt.guards),
                help=f"{opt.help} (env {env}{shown})",
            )


def config_from_args(config: type, args: argparse.Namespace, **extra: Any) -> Any:
    """The dataclass `config` from parsed flags (fields without an option keep their defaults)."""
    check_variables(args)
    values: dict[str, Any] = {}
    for field in dataclasses.fields(config):
        opt: Option | None = field.metadata.get("option")
        if opt is None or not hasattr(args, field.name):
            continue
        value = getattr(args, field.name)
        if opt.repeated:  # the flag not given: the variable's, else the default; commas part items
            flag = _field_flag(field)
            # an empty item given on the command line is a mistake (--api-key= must not open the server)
            if value is not None and not all(item.strip() for v in value for item in v.split(",")):
                raise SystemExit(f"error: {flag} was given an empty value")
            given = value if value is not None else getattr(args, f"{field.name}_env")
            value = [item.strip() for v in given for item in v.split(",") if item.strip()]
        values[field.name] = value
    try:
        return config(**values, **extra)
    except ValueError as e:  # a value out of its range: say which flag and variable set it, no traceback
        named = [  # the field the message names first, as a whole word (max_model_len is not model)
            (found.start(), _field_flag(f))
            for f in dataclasses.fields(config)
            if "option" in f.metadata and (found := re.search(rf"\b{f.name}\b", str(e)))
        ]
        flag = min(named)[1] if named else None
        where = f" ({flag} or {env_name(flag[2:])})" if flag else ""
        raise SystemExit(f"error: {e}{where}") from None


def _field_flag(field: dataclasses.Field) -> str:
    """The flag that sets a field with an option (its own name, e.g. --api-key for api_keys, or the field's)."""
    return field.metadata["option"].flag or _flag(field.name)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _default(field: dataclasses.Field) -> Any:
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def _base_type(hint: Any) -> type:
    """str, int, float, bool or list, from `int | None` and the like."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
    origin = typing.get_origin(hint)
    return origin if origin is not None else hint
