"""Configuration: frozen dataclasses filled from TOML with strict keys.

Each stage defines its own frozen dataclass next to its workflow (for example
``lensgen.source.train.TrainConfig``); this module holds the shared machinery:

* :func:`load_toml` reads a file and reports syntax errors with the file name;
* :func:`from_dict` builds a (possibly nested) dataclass from a mapping, refusing
  unknown keys with the closest valid name suggested;
* :func:`with_overrides` applies dotted ``section.key=value`` overrides
  (CLI flags beat TOML, TOML beats the defaults in code);
* :func:`load_config` is the one loader of every command: defaults ← TOML file ←
  dotted overrides, with the CLI flag that set each key named in errors;
* :func:`to_dict` / :func:`dumps_toml` write the resolved config next to outputs.
"""

from __future__ import annotations

import dataclasses
import tomllib  # Python >= 3.11; tomli is its backport for older interpreters
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from lensgen.errors import ConfigError, did_you_mean

T = TypeVar("T")

SEED_MAX = 2**32 - 1
"""Seeds are JAX PRNG seeds: integers in [0, 2**32 - 1], from ``--seed`` or a config file."""


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file, turning I/O and syntax errors into :class:`ConfigError`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not a UTF-8 text file (byte 0x{exc.object[exc.start]:02x} at offset "
            f"{exc.start}); TOML files must be UTF-8"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None


def suggest(name: str, valid: list[str]) -> str:
    """The closest valid key as a hint, else the list of valid keys."""
    return did_you_mean(name, valid) or f" (valid keys: {', '.join(valid)})"


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check and convert a TOML value to the annotated field type."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if _is_dataclass_type(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return from_dict(tp, value, where)
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(
                f"{where}: invalid value {value!r}; choose one of {', '.join(map(repr, args))}"
            )
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
            return tuple(
                _coerce(v, a, f"{where}[{i}]")
                for i, (v, a) in enumerate(zip(value, args, strict=True))
            )
        inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return dict(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if tp is Path:
        if not isinstance(value, (str, Path)):
            raise ConfigError(f"{where}: expected a path string, got {value!r}")
        return Path(value)
    return value


def from_dict(cls: type[T], data: Mapping[str, Any], where: str = "config") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys raise :class:`ConfigError`.

    ``where`` names the place in the file (``"sim.toml [lens]"``) for messages.
    Nested dataclass fields accept nested tables.
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(f"{where}: unknown key '{key}'{suggest(key, sorted(fields))}")
        kwargs[key] = _coerce(value, hints[key], f"{where}.{key}")
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError, ConfigError) as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return obj


def to_dict(obj: Any) -> Any:
    """Dataclass (nested) → plain dict of TOML-serialisable values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, Mapping):
        return {str(k): to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def load_config(
    cls: type[T],
    path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    flags: Mapping[str, str] | None = None,
    *,
    table: str | None = None,
    parse: Callable[[type[T], Mapping[str, Any], str], T] | None = None,
) -> T:
    """A command's settings: ``cls()`` defaults ← the TOML file at ``path`` ← ``overrides``.

    Parameters
    ----------
    cls : type
        The frozen config dataclass.
    path : path, optional
        TOML file (strict keys); None keeps the defaults.
    overrides, flags : mapping, optional
        Dotted-key values (None = unset) and the CLI flag of each key, as
        :func:`with_overrides`.
    table : str, optional
        Read only this table of the file (``"flow"`` for ``[flow]``); other tables are
        errors.
    parse : callable, optional
        ``parse(cls, data, where)`` for files with a layout of their own (default
        :func:`from_dict`).
    """
    if path is None:
        cfg = cls()
    else:
        data: Mapping[str, Any] = load_toml(path)
        where = str(path)
        if table is not None:
            extra = sorted(set(data) - {table})
            if extra:
                raise ConfigError(f"{path}: unknown table '{extra[0]}' (expected [{table}])")
            data, where = data.get(table, {}), f"{path} [{table}]"
        cfg = (parse or from_dict)(cls, data, where)
    return with_overrides(cfg, overrides or {}, flags)


def with_overrides(
    obj: T, overrides: Mapping[str, Any], flags: Mapping[str, str] | None = None
) -> T:
    """Return ``obj`` with dotted-key overrides applied (``{"train.lr": 1e-3}``).

    ``None`` values are skipped, so unset CLI flags leave the config alone. ``flags``
    maps a dotted key to the CLI flag that set it (``{"train.lr": "--lr"}``), so that
    an error names what the user typed. All overrides of one dataclass are applied
    together, so its checks see the final values (``--min 11 --max 12`` over defaults
    of 8 and 10 is valid).
    """
    items = [
        (dotted.split("."), value, dotted, (flags or {}).get(dotted, f"override '{dotted}'"))
        for dotted, value in overrides.items()
        if value is not None
    ]
    return _apply(obj, items)[0] if items else obj


def _apply(obj: Any, items: list[tuple[list[str], Any, str, str]]) -> tuple[Any, list[str]]:
    """``obj`` with ``items`` applied, and the labels of the items that changed a value
    (an error names only those: a flag left at its default did not cause it)."""
    names = [f.name for f in dataclasses.fields(obj)]
    hints = typing.get_type_hints(type(obj))
    changes: dict[str, Any] = {}
    changed: list[str] = []
    nested: dict[str, list] = {}
    for parts, value, dotted, label in items:
        head = parts[0]
        if head not in names:
            raise ConfigError(f"{label}: unknown key '{head}'{suggest(head, names)}")
        if len(parts) == 1:
            try:
                new = _coerce(value, hints[head], dotted)
            except ConfigError as exc:
                raise ConfigError(f"{label}: {exc}") from None
            if new != getattr(obj, head):
                changes[head] = new
                changed.append(label)
        else:
            nested.setdefault(head, []).append((parts[1:], value, dotted, label))
    for head, sub in nested.items():
        changes[head], labels = _apply(getattr(obj, head), sub)
        changed += labels
    if not changes:
        return obj, []
    try:
        return dataclasses.replace(obj, **changes), changed
    except (TypeError, ValueError, ConfigError) as exc:
        raise ConfigError(f"{', '.join(dict.fromkeys(changed))}: {exc}") from None


def toml_value(value: Any) -> str:
    """One value as TOML text: numbers exactly (``repr``), strings, arrays, inline tables."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value.item() if hasattr(value, "item") else value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {value!r} as TOML")


def dumps_toml(data: Mapping[str, Any]) -> str:
    """Serialise a dict of scalars and (nested) tables to TOML text. ``None`` is omitted."""
    lines: list[str] = []
    tables: list[tuple[str, Mapping[str, Any]]] = []
    for key, value in data.items():
        if value is None:
            continue
        if isinstance(value, Mapping) and all(not isinstance(v, Mapping) for v in value.values()):
            tables.append((key, value))
        elif isinstance(value, Mapping):
            tables.append((key, value))
        else:
            lines.append(f"{key} = {toml_value(value)}")

    def emit(prefix: str, table: Mapping[str, Any]) -> None:
        lines.append("")
        lines.append(f"[{prefix}]")
        subtables = []
        for k, v in table.items():
            if v is None:
                continue
            if isinstance(v, Mapping):
                subtables.append((f"{prefix}.{k}", v))
            else:
                lines.append(f"{k} = {toml_value(v)}")
        for name, sub in subtables:
            emit(name, sub)

    for name, table in tables:
        emit(name, table)
    return "\n".join(lines).lstrip("\n") + "\n"
