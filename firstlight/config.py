"""Typed stage configs become command lines: one dataclass per stage serves CLI, jobs and tests.

Each field of a stage's config dataclass becomes ``--field-name``; its type annotation converts the
value, its ``metadata["help"]`` documents it. Only options given on the command line override the
dataclass defaults, and the stage's ``validate()`` runs before any work starts.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing

from firstlight.errors import ConfigError


def _base_type(annotation):
    """int | None -> int; tuple[str, ...] -> tuple."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _base_type(args[0])
    return origin or annotation


def _parse_bool(text: str) -> bool:
    low = text.lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def add_config_args(parser: argparse.ArgumentParser, cls) -> None:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init or f.metadata.get("cli") is False:
            continue
        kind = _base_type(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        help_text = f.metadata.get("help", "") + (f" (default: {default!r})" if default not in (None, ()) else "")
        flag = "--" + f.name.replace("_", "-")
        if kind is bool:
            parser.add_argument(flag, dest=f.name, type=_parse_bool, default=None, metavar="BOOL", help=help_text)
        elif kind is tuple:
            parser.add_argument(flag, dest=f.name, type=lambda s: tuple(x for x in s.split(",") if x),
                                default=None, metavar="A,B", help=help_text)
        else:
            parser.add_argument(flag, dest=f.name, type=kind, default=None, help=help_text)


def config_from_args(cls, namespace: argparse.Namespace, **overrides):
    given = {f.name: getattr(namespace, f.name) for f in dataclasses.fields(cls)
             if getattr(namespace, f.name, None) is not None}
    given.update(overrides)
    return cls(**given)


def check_choice(field: str, value, choices) -> None:
    if value not in choices:
        raise ConfigError(field, f"{value!r} is not one of {', '.join(map(repr, choices))}",
                          f"set it to one of {', '.join(map(str, choices))}")


def check_range(field: str, value, low=None, high=None, *, low_inclusive=True) -> None:
    too_low = low is not None and (value < low if low_inclusive else value <= low)
    if too_low or (high is not None and value > high):
        bounds = f"{'>=' if low_inclusive else '>'} {low}" if high is None else f"between {low} and {high}"
        raise ConfigError(field, f"{value!r} is out of range", f"use a value {bounds}")
