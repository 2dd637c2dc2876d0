"""The one config system of pangu_core: typed, frozen dataclasses that check themselves.

A config is a ``@dataclass(frozen=True)`` that mixes in :class:`Config`. Building one, from Python or
from YAML, checks every field against its annotation (``bool`` takes only booleans, ``int`` no floats
or booleans, ``Literal`` its values, ``tuple[X, ...]`` a list of X, a nested config a mapping of its
own fields) and then runs the class's :meth:`Config.validate` for the rules between values. Every
problem is collected and reported at once in one :class:`ConfigError`::

    invalid SFTRunConfig:
      trainer.lr: expected a number > 0, got -1
      show_progress: expected a bool, got 'yes' (str)

Lists become tuples and mappings become nested configs on the way in, so configs are hashable and
picklable. ``to_dict`` and ``to_yaml`` write a config back out; ``from_dict(c.to_dict()) == c``.
YAML is read by :func:`load_yaml`, which refuses duplicate keys and says the file and line of each
problem.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping, TypeVar, Union

C = TypeVar("C", bound="Config")


class ConfigError(ValueError):
    """A config with one or more invalid fields; ``problems`` holds each as ``"field: what"``."""

    def __init__(self, name: str, problems: Iterable[str]):
        self.config_name = name
        self.problems = list(problems)
        if len(self.problems) == 1:
            message = f"invalid {name}: {self.problems[0]}"
        else:
            message = f"invalid {name}:\n  " + "\n  ".join(self.problems)
        super().__init__(message)

    def one_line(self) -> str:
        """The message on one line (problems joined by "; "), for command-line errors."""
        return f"invalid {self.config_name}: " + "; ".join(self.problems)


def describe_value(value: Any) -> str:
    """``value`` as it appears in messages: its repr, shortened, with its type where it is not obvious."""
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    if isinstance(value, (str, bool)) or value is None or type(value) in (int, float):
        if isinstance(value, str):
            return f"{text} (str)"
        return text
    return f"{text} ({type(value).__name__})"


def expect(problems: list[str], ok: bool, field: str, expected: str, value: Any) -> bool:
    """Appends ``"field: expected <expected>, got <value>"`` to ``problems`` unless ``ok``; returns ok."""
    if not ok:
        problems.append(f"{field}: expected {expected}, got {describe_value(value)}")
    return bool(ok)


def expect_name(problems: list[str], field: str, value: Any, known: Iterable[str], what: str = "name") -> bool:
    """Checks that ``value`` is one of the registered names ``known``; the problem lists them."""
    known = list(known)
    ok = isinstance(value, str) and value in known
    if not ok:
        problems.append(f"{field}: unknown {what} {value!r}; known: {', '.join(known)}")
    return ok


def is_number(value: Any) -> bool:
    """True for int and float values, False for booleans (which Python counts as ints)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# ---------------------------------------------------------------------------------------------
# Checking and converting one value against its annotation


def _expected_text(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if hint is Any:
        return "any value"
    if hint is type(None):
        return "null"
    if hint is bool:
        return "a bool"
    if hint is int:
        return "an int"
    if hint is float:
        return "a number"
    if hint is str:
        return "a string"
    if isinstance(hint, type) and issubclass(hint, Config):
        return f"a mapping of {hint.__name__} fields"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if origin in (Union, types.UnionType):
        return " or ".join(_expected_text(a) for a in typing.get_args(hint))
    if origin is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            if _is_pairs(hint):
                return f"a mapping of names to {_expected_text(typing.get_args(args[0])[1])}"
            return f"a list of {_expected_text(args[0])}"
        return f"a list of {len(args)} values"
    return getattr(hint, "__name__", str(hint))


def _is_pairs(hint: Any) -> bool:
    """True for ``tuple[tuple[str, X], ...]``: a mapping kept as ordered (name, value) pairs."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) is not tuple or len(args) != 2 or args[1] is not Ellipsis:
        return False
    inner = args[0]
    inner_args = typing.get_args(inner)
    return typing.get_origin(inner) is tuple and len(inner_args) == 2 and inner_args[0] is str


class _Mismatch(Exception):
    """Raised while converting a value that does not fit its annotation; carries the problems."""

    def __init__(self, problems: list[str]):
        self.problems = problems


def _convert(value: Any, hint: Any, field: str) -> Any:
    """Returns ``value`` converted to fit ``hint`` (lists to tuples, mappings to configs) or raises _Mismatch."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return value
    if hint is type(None):
        if value is None:
            return None
    elif hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if is_number(value):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    elif isinstance(hint, type) and issubclass(hint, Config):
        if isinstance(value, hint):
            return value
        if isinstance(value, Mapping):
            try:
                return hint.from_dict(value)
            except ConfigError as error:
                raise _Mismatch([f"{field}.{p}" for p in error.problems]) from None
    elif origin is Literal:
        if any(value == a and type(value) is type(a) for a in typing.get_args(hint)):
            return value
    elif origin in (Union, types.UnionType):
        nested: list[str] = []
        for option in typing.get_args(hint):
            try:
                return _convert(value, option, field)
            except _Mismatch as mismatch:
                # A value of the right shape with a bad element says more than "expected X or Y".
                if len(mismatch.problems) == 1 and mismatch.problems[0].startswith(f"{field}: expected"):
                    continue
                nested = mismatch.problems
        if nested:
            raise _Mismatch(nested)
    elif origin is tuple:
        args = typing.get_args(hint)
        if _is_pairs(hint) and isinstance(value, Mapping):
            value = tuple(value.items())
        if isinstance(value, (list, tuple)):
            variadic = len(args) == 2 and args[1] is Ellipsis
            if variadic or len(value) == len(args):
                problems: list[str] = []
                out = []
                pairs = _is_pairs(hint)
                for i, item in enumerate(value):
                    item_hint = args[0] if variadic else args[i]
                    try:
                        if pairs and isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], str):
                            value_hint = typing.get_args(item_hint)[1]
                            out.append((item[0], _convert(item[1], value_hint, f"{field}[{item[0]!r}]")))
                        else:
                            out.append(_convert(item, item_hint, f"{field}[{i}]"))
                    except _Mismatch as mismatch:
                        problems.extend(mismatch.problems)
                if problems:
                    raise _Mismatch(problems)
                return tuple(out)
    else:
        raise TypeError(f"{field}: annotation {hint!r} is not supported by pangu_core.config")
    raise _Mismatch([f"{field}: expected {_expected_text(hint)}, got {describe_value(value)}"])


def _plain(value: Any, hint: Any) -> Any:
    """``value`` as plain YAML data: configs to dicts, tuples to lists, (name, value) pairs to a dict."""
    if isinstance(value, Config):
        return value.to_dict()
    if isinstance(value, tuple):
        if _is_pairs(hint):
            inner = typing.get_args(typing.get_args(hint)[0])[1]
            return {k: _plain(v, inner) for k, v in value}
        args = typing.get_args(hint) if typing.get_origin(hint) is tuple else ()
        items = []
        for i, item in enumerate(value):
            item_hint = args[0] if len(args) == 2 and args[1] is Ellipsis else (args[i] if i < len(args) else Any)
            items.append(_plain(item, item_hint))
        return items
    return value


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


# ---------------------------------------------------------------------------------------------
# The mixin


class Config:
    """Mixin for frozen config dataclasses: typed fields, all problems at once, dicts and YAML.

    Subclasses are ``@dataclass(frozen=True)`` and put their rules between values in
    :meth:`validate` (they do not define ``__post_init__``).
    """

    def __post_init__(self) -> None:
        hints = _hints(type(self))
        problems: list[str] = []
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            try:
                converted = _convert(getattr(self, f.name), hints[f.name], f.name)
            except _Mismatch as mismatch:
                problems.extend(mismatch.problems)
                continue
            if converted is not getattr(self, f.name):
                object.__setattr__(self, f.name, converted)
        if problems:
            # The rules between values may assume the types; report what they find only if they can run.
            bad = {p.split(":", 1)[0].split(".", 1)[0].split("[", 1)[0] for p in problems}
            try:
                problems.extend(p for p in self.validate() if p.split(":", 1)[0].split(".", 1)[0].split("[", 1)[0]
                                not in bad)
            except Exception:
                pass
        else:
            problems.extend(self.validate())
        if problems:
            raise ConfigError(type(self).__name__, problems)

    def validate(self) -> list[str]:
        """Problems with the values together, each ``"field: expected ..., got ..."``; none by default."""
        return []

    @classmethod
    def from_dict(cls: type[C], values: Mapping[str, Any]) -> C:
        """Builds the config from a mapping of its fields; unknown keys are problems like any other."""
        if isinstance(values, cls):
            return values
        if not isinstance(values, Mapping):
            raise ConfigError(cls.__name__, [f"expected a mapping of {cls.__name__} fields, got "
                                             f"{describe_value(values)}"])
        known = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
        problems = [f"{key}: unknown key; known: {', '.join(known)}" for key in values if key not in known]
        kwargs = {key: value for key, value in values.items() if key in known}
        try:
            config = cls(**kwargs)
        except ConfigError as error:
            raise ConfigError(cls.__name__, problems + error.problems) from None
        except TypeError as error:  # a required field is missing
            raise ConfigError(cls.__name__, problems + [str(error).split("()", 1)[-1].strip()]) from None
        if problems:
            raise ConfigError(cls.__name__, problems)
        return config

    @classmethod
    def from_yaml(cls: type[C], path: str | Path) -> C:
        """Loads the config from a YAML file; problems name the file and the line of the field."""
        data, lines = load_yaml(path)
        if data is None:
            data = {}
        try:
            return cls.from_dict(data)
        except ConfigError as error:
            raise ConfigError(cls.__name__, [_locate(p, path, lines) for p in error.problems]) from None

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain data (dicts, lists, numbers, strings), ready for JSON or YAML."""
        hints = _hints(type(self))
        return {f.name: _plain(getattr(self, f.name), hints[f.name]) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    def to_yaml(self, path: str | Path | None = None) -> str:
        """The config as YAML text; also written to ``path`` when one is given."""
        import yaml

        text = yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    def replace(self: C, **changes: Any) -> C:
        """A copy with ``changes`` applied (checked like a new config)."""
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


def _locate(problem: str, path: str | Path, lines: Mapping[tuple, int]) -> str:
    """Prefixes ``problem`` with ``path:line`` of the deepest YAML key its field path names."""
    field = problem.split(":", 1)[0]
    keys: list[Any] = []
    for part in field.replace("]", "").split("."):
        name, *indices = part.split("[")
        keys.append(name)
        for index in indices:
            keys.append(int(index) if index.isdigit() else index.strip("'\""))
    while keys:
        line = lines.get(tuple(keys))
        if line is not None:
            return f"{path}:{line}: {problem}"
        keys.pop()
    return f"{path}: {problem}"


# ---------------------------------------------------------------------------------------------
# YAML


def load_yaml(path: str | Path) -> tuple[Any, dict[tuple, int]]:
    """Reads a YAML file strictly: returns its data and the 1-based line of every key and list item.

    Duplicate keys, syntax errors, a missing file or a directory raise :class:`ConfigError` naming the
    file (and the line, where there is one). ``lines`` maps key paths such as ``("trainer", "lr")``
    or ``("models", 0)`` to lines.
    """
    import yaml

    path = Path(path)
    name = "config file"
    if not path.exists():
        raise ConfigError(name, [f"{path}: no such file"])
    if path.is_dir():
        raise ConfigError(name, [f"{path}: is a directory, expected a YAML file"])
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(name, [f"{path}: cannot read: {error}"]) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(name, [f"{where}: YAML syntax: {error.problem or error.context}"]) from None
    except yaml.YAMLError as error:
        raise ConfigError(name, [f"{path}: YAML syntax: {error}"]) from None
    if node is None:
        return None, {}
    lines: dict[tuple, int] = {}
    duplicates: list[str] = []
    _walk(node, (), lines, duplicates, path)
    if duplicates:
        raise ConfigError(name, duplicates)
    return yaml.safe_load(text), lines


def _walk(node: Any, where: tuple, lines: dict[tuple, int], duplicates: list[str], path: Path) -> None:
    import yaml

    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            line = key_node.start_mark.line + 1
            if key in seen:
                duplicates.append(f"{path}:{line}: {'.'.join(map(str, where + (key,)))}: duplicate key "
                                  f"(first at line {seen[key]})")
                continue
            seen[key] = line
            lines[where + (key,)] = line
            _walk(value_node, where + (key,), lines, duplicates, path)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[where + (i,)] = item.start_mark.line + 1
            _walk(item, where + (i,), lines, duplicates, path)

