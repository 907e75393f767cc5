"""Typed construction of dataclass trees from plain dicts (YAML, command-line overrides).

Values are checked against the field types: an unknown key is an error that names the closest
valid key, a wrong type names the key and the type it expects. A section given only in part is
completed from ``base`` (the method's own defaults), not from the generic section class.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import fields, is_dataclass
from typing import Any, Literal, get_args, get_origin

from jepactl.errors import RecipeError


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if origin in (tuple, list):
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            return f"a list of {len(args)} values ({', '.join(_type_name(a) for a in args)})"
        return f"a list of {_type_name(args[0]) if args else 'values'}"
    if tp is type(None):
        return "null"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _coerce(value: Any, tp: Any, key: str, default: Any = None) -> Any:
    """Return ``value`` converted to ``tp``; raise RecipeError naming ``key`` otherwise.

    A section (``tp`` a dataclass) is built over ``default``, the section the recipe class
    would have without it, so unnamed keys keep the method's defaults."""
    origin = get_origin(tp)
    bad = RecipeError(f"recipe key '{key}': expected {_type_name(tp)}, got {value!r}")
    if tp is Any:
        return value
    if origin is Literal:
        if value in get_args(tp):
            return value
        raise bad
    if origin in (typing.Union, types.UnionType):
        for arg in get_args(tp):
            try:
                return _coerce(value, arg, key)
            except RecipeError:
                continue
        raise bad
    if tp is type(None):
        if value is None:
            return None
        raise bad
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise bad
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise bad
            return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise bad
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if tp is int:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise bad
    if tp is float:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                raise bad from None
        raise bad
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise bad
    if is_dataclass(tp):
        if not isinstance(value, dict):
            raise RecipeError(f"recipe key '{key}': expected a section (a mapping), got {value!r}")
        return build_dataclass(
            tp, value, prefix=key + ".", base=default if isinstance(default, tp) else None
        )
    raise bad


def _unknown_key(key: str, valid: list[str], prefix: str) -> RecipeError:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    hint = f"; did you mean '{prefix}{close[0]}'?" if close else f"; valid keys: {', '.join(valid)}"
    return RecipeError(f"unknown recipe key '{prefix}{key}'{hint}")


def build_dataclass(cls: type, values: dict[str, Any], prefix: str = "", base: Any = None) -> Any:
    """Return an instance of dataclass ``cls`` with ``values`` validated over its defaults, or
    over ``base`` (an instance of ``cls``) where given.

    A nested section takes its defaults from the enclosing class's field default, not from the
    section class: ``model: {depth: 4}`` in an ECG recipe keeps ECG-JEPA's ViT-XS width, not
    the generic encoder's."""
    hints = typing.get_type_hints(cls)
    by_name = {f.name: f for f in fields(cls)}
    valid = list(by_name)
    kwargs = {}
    for key, value in values.items():
        if key not in by_name:
            raise _unknown_key(key, valid, prefix)
        default = getattr(base, key) if base is not None else field_default(by_name[key])
        kwargs[key] = _coerce(value, hints[key], prefix + key, default)
    if base is not None:
        return dataclasses.replace(base, **kwargs)
    return cls(**kwargs)


def field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def to_dict(obj: Any) -> Any:
    """Return a dataclass tree as plain YAML-safe dicts and lists."""
    if is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj
