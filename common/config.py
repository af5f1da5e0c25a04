"""Typed stage configs become command lines and YAML files: one dataclass per stage serves the CLI,
`ray job submit`, recipe files and tests.

Each field of a stage's config dataclass becomes ``--field-name``; its type annotation converts the
value, its ``metadata["help"]`` documents it. A field that is itself a config dataclass (the demo's
``train``) becomes ``--train-field-name`` flags and a ``train:`` mapping in YAML. ``--config FILE``
reads a YAML file of field values first; options given on the command line override it, and
the dataclass defaults fill the rest. The stage's ``validate()`` runs before any work starts.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import types
import typing
from pathlib import Path

from common.errors import ConfigError


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


def _split(text: str) -> tuple:
    return tuple(x for x in text.split(",") if x)


def _cli_fields(cls):
    """(field, base type) of each field the command line and YAML files may set."""
    hints = typing.get_type_hints(cls)
    return [(f, _base_type(hints[f.name])) for f in dataclasses.fields(cls)
            if f.init and f.metadata.get("cli") is not False]


def _default(f):
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else None


def add_config_args(parser: argparse.ArgumentParser, cls, prefix: str = "", defaults=None) -> None:
    """``--field-name`` for every field of ``cls`` (``--COMPONENT-field-name`` inside a component),
    and ``--config FILE`` once. ``defaults``: a component's default instance (its owner's defaults)."""
    if not prefix:
        parser.add_argument("--config", dest="config", default=None, metavar="FILE",
                            help="YAML file of this stage's settings; options given here override it")
    for f, kind in _cli_fields(cls):
        if dataclasses.is_dataclass(kind):
            add_config_args(parser, kind, prefix=f"{prefix}{f.name}_", defaults=_default(f))
            continue
        if f.metadata.get("flag") is False:  # a tuning knob: set in the --config file, not by a flag
            continue
        default = getattr(defaults, f.name) if defaults is not None else _default(f)
        help_text = f.metadata.get("help", "") + (f" (default: {default!r})" if default not in (None, ()) else "")
        dest = prefix + f.name
        flag = "--" + dest.replace("_", "-")
        kinds = {bool: (_parse_bool, "BOOL"), tuple: (_split, "A,B")}
        convert, metavar = kinds.get(kind, (kind, None))
        parser.add_argument(flag, dest=dest, type=convert, default=None, metavar=metavar, help=help_text)


def _given(cls, namespace, prefix: str = "") -> dict:
    """The values given on the command line, nested like the dataclass."""
    out = {}
    for f, kind in _cli_fields(cls):
        if dataclasses.is_dataclass(kind):
            nested = _given(kind, namespace, f"{prefix}{f.name}_")
            if nested:
                out[f.name] = nested
        elif getattr(namespace, prefix + f.name, None) is not None:
            out[f.name] = getattr(namespace, prefix + f.name)
    return out


def _merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict):  # a copy: dotted keys below update it, never the caller's mapping
            value = _merge(out[key], value) if isinstance(out.get(key), dict) else dict(value)
        out[key] = value
    return out


def config_from_args(cls, namespace: argparse.Namespace, **overrides):
    """The stage config: YAML file (``--config``), then command-line options, then ``overrides``."""
    values = read_yaml(namespace.config) if getattr(namespace, "config", None) else {}
    return build_config(cls, _merge(_merge(values, _given(cls, namespace)), overrides),
                        source=getattr(namespace, "config", None) or "the command line")


def read_yaml(path) -> dict:
    """A YAML mapping of field values; a clear error for a missing or malformed file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError("config", f"{path} does not exist", "pass the path of a YAML file of settings")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError("config", f"{path} is not valid YAML ({str(err).splitlines()[0]})",
                          "fix the file; it maps field names to values, e.g. `batch_size: 128`") from None
    if not isinstance(values, dict):
        raise ConfigError("config", f"{path} holds a {type(values).__name__}, not a mapping of settings",
                          "write one `field_name: value` line per setting")
    return values


def load_config(cls, path, **overrides):
    """A stage config from a YAML file (what a cluster job submits), with ``overrides`` on top."""
    return build_config(cls, _merge(read_yaml(path), overrides), source=str(path))


def _undotted(values: dict) -> dict:
    """``{"encoder.num_cpus": 1}`` -> ``{"encoder": {"num_cpus": 1}}`` (`serve run ... key=value` args)."""
    out: dict = {}
    for key, value in values.items():
        head, _, rest = str(key).partition(".")
        if rest:
            nested = out.setdefault(head, {})
            if isinstance(nested, dict):
                nested.update(_undotted({rest: value}))
                continue
        if isinstance(value, dict):  # a copy: dotted keys below update it, never the caller's mapping
            value = _merge(out[key], value) if isinstance(out.get(key), dict) else dict(value)
        out[key] = value
    return out


def build_config(cls, values: dict, source: str = "", prefix: str = "", base=None):
    """``cls(**values)``, components built too (from their owner's defaults), each value converted to
    its field's type; an unknown name or a value of the wrong type is a ConfigError naming the field.
    ``base``: the instance whose values unset fields keep (a component's default)."""
    fields = {f.name: f for f, _ in _cli_fields(cls)}
    known = {f.name: kind for f, kind in _cli_fields(cls)}
    kwargs = {}
    for name, value in _undotted(values).items():
        field = prefix + name
        renamed = getattr(cls, "RENAMED", {}).get(name)
        # a component's name may once have been a plain setting's (serve's ``reranker`` folder)
        if renamed and (name not in known or not isinstance(value, dict)):
            raise ConfigError(field, f"is now {prefix}{renamed} (in {source})",
                              f"write it as `{renamed}` (a `{renamed.split('.')[0]}:` mapping in YAML, "
                              f"--{renamed.replace('.', '-').replace('_', '-')} on the command line)")
        if name not in known:
            near = ", ".join(difflib.get_close_matches(name, known, n=3))
            raise ConfigError(field, f"is not a setting of {cls.__name__} (in {source})",
                              f"remove it or correct its name{' (close: ' + near + ')' if near else ''}; "
                              "`firstlight STAGE --help` lists every setting")
        kind = known[name]
        if dataclasses.is_dataclass(kind):
            if not isinstance(value, dict):
                raise ConfigError(field, f"should be a mapping of {kind.__name__} settings (in {source})",
                                  f"write it as `{name}:` followed by indented `field: value` lines")
            start = getattr(base, name) if base is not None else _default(fields[name])
            kwargs[name] = build_config(kind, value, source, prefix=f"{field}.", base=start)
        else:
            kwargs[name] = _converted(field, value, kind, source)
    if base is not None:
        return dataclasses.replace(base, **kwargs)
    return cls(**kwargs)


def _converted(field: str, value, kind, source: str):
    if value is None or kind in (typing.Any, object):
        return value
    try:
        if kind is bool:
            return value if isinstance(value, bool) else _parse_bool(str(value))
        if kind is tuple:
            return tuple(value) if isinstance(value, (list, tuple)) else _split(str(value))
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
            return value
        if kind in (int, float) and isinstance(value, str):
            return kind(value)
        if kind is str and isinstance(value, (int, float)):
            return str(value)
    except (ValueError, argparse.ArgumentTypeError):
        pass
    raise ConfigError(field, f"{value!r} is not a {kind.__name__} (in {source})",
                      f"give it a {kind.__name__} value")


def check_choice(field: str, value, choices) -> None:
    if value not in choices:
        raise ConfigError(field, f"{value!r} is not one of {', '.join(map(repr, choices))}",
                          f"set it to one of {', '.join(map(str, choices))}")


def check_range(field: str, value, low=None, high=None, *, low_inclusive=True) -> None:
    too_low = low is not None and (value < low if low_inclusive else value <= low)
    if too_low or (high is not None and value > high):
        bounds = f"{'>=' if low_inclusive else '>'} {low}" if high is None else f"between {low} and {high}"
        raise ConfigError(field, f"{value!r} is out of range", f"use a value {bounds}")
