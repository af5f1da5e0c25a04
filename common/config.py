"""Typed stage configs become command lines and YAML files through jsonargparse: one dataclass per
stage serves the CLI, `ray job submit`, recipe files, `serve run` args and tests.

Each field of a stage's dataclass is a ``--field_name`` flag and a ``field_name:`` key; a field that is
itself a dataclass (a component: ``optim``, ``first_stage``, ``encoder``) gives ``--optim.lr`` flags and
an ``optim:`` mapping. ``--config FILE`` reads a YAML file; flags after it override it; the dataclass
defaults (a component's from its owner's ``default_factory``) fill the rest. jsonargparse converts
and type-checks every value; this module adds what it does not say on its own: a setting that moved
names its new key, an unknown one its closest valid keys, and every error names the field.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import typing
from functools import lru_cache
from pathlib import Path

from common.errors import ConfigError

SETTINGS_HELP = "YAML file of this stage's settings (`--print_config` writes one); flags after it override it"


# A list setting: a YAML list, [a,b] on the command line, or the comma-separated "a,b" that flags took
# before jsonargparse (the owner's __post_init__ splits it with ``listed``).
Listed = tuple[str, ...] | str


def listed(value) -> tuple:
    """``value`` as a tuple: a comma-separated string split, a list kept."""
    if isinstance(value, str):
        return tuple(x.strip() for x in value.split(",") if x.strip())
    return tuple(value)


def _fields(cls) -> list[tuple[dataclasses.Field, typing.Any]]:
    """(field, type) of each field the command line and YAML files may set."""
    hints = typing.get_type_hints(cls)
    return [(f, hints[f.name]) for f in dataclasses.fields(cls) if f.init and f.metadata.get("cli") is not False]


def _hidden(cls) -> set[str]:
    """The fields only code may set (a test's fault injection)."""
    return {f.name for f in dataclasses.fields(cls) if f.metadata.get("cli") is False}


def new_parser(cls, prog: str | None = None, description: str | None = None):
    """A jsonargparse parser of ``cls``: its flags, ``--config FILE`` and ``--print_config``, each flag
    documented from its field's ``metadata["help"]``."""
    from jsonargparse import ActionConfigFile, ArgumentParser

    parser = ArgumentParser(prog=prog, description=description, exit_on_error=False)
    parser.add_argument("--config", action=ActionConfigFile, help=SETTINGS_HELP)
    parser.add_class_arguments(cls, None, skip=_hidden(cls) or None)
    for action in parser._actions:
        help_text = _field_help(cls, action.dest)
        if help_text:
            action.help = help_text
    return parser


def _field_help(cls, dest: str) -> str | None:
    for part in dest.split("."):
        if not dataclasses.is_dataclass(cls):
            return None
        match = [(f, kind) for f, kind in _fields(cls) if f.name == part]
        if not match:
            return None
        field, cls = match[0]
    return field.metadata.get("help")


@lru_cache(maxsize=None)
def _parser(cls):
    return new_parser(cls)


def parse_args(parser, cls, argv: list[str]):
    """The stage config from a command line (``--config FILE`` first, flags over it), and the
    namespace (for the flags a caller added to ``parser``). Unknown flags, moved flags and values
    of the wrong type are ConfigErrors naming the field."""
    from jsonargparse import ArgumentError

    check_flags(parser, cls, argv)
    run_flags = {action.dest for action in parser._actions} - {f.name for f, _ in _fields(cls)}  # --verbose ...
    for i, arg in enumerate(argv):
        if (arg == "--config" and i + 1 < len(argv)) or arg.startswith("--config="):
            path = argv[i + 1] if arg == "--config" else arg.split("=", 1)[1]
            check_keys(cls, {k: v for k, v in read_yaml(path).items() if k not in run_flags}, source=path)
    try:
        namespace = parser.parse_args(argv)
        return _instance(cls, parser.instantiate(namespace)), namespace
    except ArgumentError as err:
        raise _config_error(err, "the command line") from None


def check_flags(parser, cls, argv: list[str]) -> None:
    """An unknown flag is an error naming the flag it became (``--lr`` is now ``--optim.lr``) or
    the closest ones."""
    known = {flag for flag in parser._option_string_actions if flag.startswith("--")}
    renames = getattr(cls, "RENAMED", {})
    for arg in argv:
        flag = arg.split("=", 1)[0]
        name = flag[2:].replace("-", "_")
        # --actors is now the component's loader flag; `--actors 4` means --actors.count 4
        replaced = renames.get(name, "").startswith(name + ".")
        if not flag.startswith("--") or (flag in known and not replaced):
            continue
        moved = "--" + name if "--" + name in known else None
        renamed = renames.get(name)
        if renamed:
            moved = "--" + renamed
        moved = moved or next((k for k in known if k[2:].replace(".", "_") == name), None)
        if moved:
            raise ConfigError(flag, f"is now {moved}", f"write {moved} (`firstlight STAGE --help` lists every flag)")
        near = difflib.get_close_matches(flag, sorted(known), n=3)
        raise ConfigError(flag, "is not a flag of this stage", f"remove it or correct its name"
                          f"{' (close: ' + ', '.join(near) + ')' if near else ''}; `--help` lists every flag")


def check_keys(cls, values: dict, source: str, prefix: str = "") -> None:
    """Every key of a settings mapping is a field of ``cls`` (components recursively); a key that
    moved names its new place, an unknown one its closest valid keys."""
    known = {f.name: kind for f, kind in _fields(cls)}
    for name, value in _undotted(values).items():
        field = prefix + name
        renamed = getattr(cls, "RENAMED", {}).get(name)
        # a component's name may once have been a plain setting's (serve's ``reranker`` folder)
        if renamed and (name not in known or not isinstance(value, dict)):
            raise ConfigError(field, f"is now {prefix}{renamed} (in {source})",
                              f"write it as `{renamed}` (a `{renamed.split('.')[0]}:` mapping in YAML, "
                              f"--{prefix}{renamed} on the command line)")
        if name not in known:
            near = ", ".join(difflib.get_close_matches(name, known, n=3))
            raise ConfigError(field, f"is not a setting of {cls.__name__} (in {source})",
                              f"remove it or correct its name{' (close: ' + near + ')' if near else ''}; "
                              "`firstlight STAGE --help` lists every setting")
        if dataclasses.is_dataclass(known[name]):
            if not isinstance(value, dict):
                raise ConfigError(field, f"should be a mapping of {known[name].__name__} settings (in {source})",
                                  f"write it as `{name}:` followed by indented `field: value` lines")
            check_keys(known[name], value, source, prefix=f"{field}.")


def _instance(cls, namespace):
    """The stage's dataclass from jsonargparse's instantiated namespace (components are built already)."""
    return cls(**{f.name: namespace[f.name] for f, _ in _fields(cls) if f.name in namespace})


def _config_error(err, source: str) -> ConfigError:
    """jsonargparse's 'Parser key "optim.lr": Expected a <class 'float'>. Got value: abc' as a
    ConfigError naming the field."""
    text = re.sub(r"<class '(\w+)'>", r"\1", " ".join(str(err).split()))
    match = re.match(r'Parser key "([^"]+)": (.*)', text)
    if match:
        typed = re.match(r"Expected a (.+?)\. Got value: (.*)", match.group(2))
        problem = f"{typed.group(2)!r} is not of type {typed.group(1)}" if typed else match.group(2)
        fix = "give it a value of that type; `firstlight STAGE --help` shows each type"
        if typed and typed.group(1).startswith(("tuple", "list")):
            fix = "write a list: [a,b] on the command line (quoted in a shell), a YAML list in a file"
        return ConfigError(match.group(1), f"{problem} (in {source})", fix)
    return ConfigError("settings", f"{text} (in {source})", "`firstlight STAGE --help` lists every setting")


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
                          "fix the file; it maps field names to values, e.g. `lr: 5.0e-5` under `optim:`") from None
    if not isinstance(values, dict):
        raise ConfigError("config", f"{path} holds a {type(values).__name__}, not a mapping of settings",
                          "write one `field_name: value` line per setting")
    return values


def load_config(cls, path, **overrides):
    """A stage config from a YAML file (what a cluster job submits), with ``overrides`` on top."""
    return build_config(cls, _merge(_undotted(read_yaml(path)), _undotted(overrides)), source=str(path))


def build_config(cls, values: dict, source: str = "settings"):
    """``cls`` from a mapping of settings (nested or ``a.b`` dotted keys; values typed or strings, as
    `serve run` args are), converted and checked by jsonargparse; errors name the field."""
    from jsonargparse import ArgumentError

    values = _undotted(values)
    hidden = {name: values.pop(name) for name in _hidden(cls) if name in values}
    check_keys(cls, values, source)
    parser = _parser(cls)
    try:
        cfg = _instance(cls, parser.instantiate(parser.parse_object(values)))
    except ArgumentError as err:
        raise _config_error(err, source) from None
    return dataclasses.replace(cfg, **hidden) if hidden else cfg


def _merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            value = _merge(out[key], value)
        out[key] = value
    return out


def _undotted(values: dict) -> dict:
    """``{"encoder.num_cpus": 1}`` -> ``{"encoder": {"num_cpus": 1}}`` (`serve run ... key=value` args)."""
    out: dict = {}
    for key, value in values.items():
        head, _, rest = str(key).partition(".")
        if rest:
            value, key = {rest: value}, head
        if isinstance(value, dict):
            value = _undotted(value)
            if isinstance(out.get(key), dict):
                value = _merge(out[key], value)
        out[key] = value
    return out


def check_choice(field: str, value, choices) -> None:
    if value not in choices:
        raise ConfigError(field, f"{value!r} is not one of {', '.join(map(repr, choices))}",
                          f"set it to one of {', '.join(map(str, choices))}")


def check_range(field: str, value, low=None, high=None, *, low_inclusive=True) -> None:
    too_low = low is not None and (value < low if low_inclusive else value <= low)
    if too_low or (high is not None and value > high):
        bounds = f"{'>=' if low_inclusive else '>'} {low}" if high is None else f"between {low} and {high}"
        raise ConfigError(field, f"{value!r} is out of range", f"use a value {bounds}")
