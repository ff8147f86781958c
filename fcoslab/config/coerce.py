"""Typing a config value: a JSON value or command-line text becomes the type of a dataclass field, or a
clear error names the key and what was expected."""

from __future__ import annotations

import json
import typing
from typing import Any

from ..errors import FcoslabError


def coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert a JSON or command-line value to the field type ``tp``, or raise a clear error.

    A list-typed field (``tuple[X, ...]``) also takes one value of its element type, as a list of one:
    ``data.min_size=224`` (or ``"min_size": 224`` in a config file) is ``(224,)``. A ``Literal[...]`` field
    takes one of its words and names them all otherwise.
    """
    origin = typing.get_origin(tp)
    if origin is typing.Literal:  # one of a few words: the type lists them
        allowed = typing.get_args(tp)
        if value in allowed:
            return value
        raise FcoslabError(f"config key '{key}': {value!r} is not one of {', '.join(map(str, allowed))}")
    if origin is typing.Union:  # Optional[X]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        inner = [a for a in typing.get_args(tp) if a is not type(None)][0]
        return coerce(value, inner, key)
    if origin is tuple:
        args = typing.get_args(tp)
        if isinstance(value, str):
            value = parse_scalar(value)
        variadic = len(args) == 2 and args[1] is Ellipsis
        if variadic and not isinstance(value, (list, tuple)):  # one value: a list of one, data.min_size=224
            return (coerce(value, args[0], key),)
        if not isinstance(value, (list, tuple)):
            raise FcoslabError(f"config key '{key}': expected a list, got {value!r}")
        if variadic:
            return tuple(coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise FcoslabError(f"config key '{key}': expected {len(args)} items, got {value!r}")
        return tuple(coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if isinstance(value, str) and tp is not str:
        value = parse_scalar(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    raise FcoslabError(f"config key '{key}': expected {getattr(tp, '__name__', tp)}, got {value!r}")


def parse_scalar(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text
