"""Every config key with its value, default, type and meaning, read from the dataclasses themselves.

    fcoslab config PRESET [--set KEY=VALUE ...] --explain     # the table for a resolved config
    python -m fcoslab.config.docs > docs/config.md           # the reference page (a test keeps it current)

The meaning of a key is the comment written with its field in :mod:`fcoslab.config`: the comment at the end of
its line, or the comment lines just above it, so the documentation cannot drift from the code.
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import json
import re
import sys
import tokenize
import typing

from . import sections as config_module
from .core import Config

_FIELD = re.compile(r"^\s+(\w+)\s*:")


def field_comments(cls) -> dict[str, str]:
    """``{field: comment}`` of a dataclass: a field's trailing comment, else the comment lines above it."""
    source = inspect.getsource(cls)
    comments: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
    out, above = {}, []
    for number, line in enumerate(source.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("#"):
            above.append(comments.get(number, ""))
            continue
        match = _FIELD.match(line)
        if match and not stripped.startswith(("def ", "@")):
            trailing = comments.get(number) if "#" in line else None
            out[match.group(1)] = trailing or " ".join(above)
        above = []
    return out


def _choices(tp) -> tuple | None:
    """The words of a ``Literal[...]`` type, else None."""
    return typing.get_args(tp) if typing.get_origin(tp) is typing.Literal else None


def _type_name(tp) -> str:
    if typing.get_origin(tp) is typing.Literal:
        return "str"
    if typing.get_origin(tp) is not None:  # tuple[int, ...], Optional[str], ...
        return str(tp).replace("typing.", "")
    return getattr(tp, "__name__", str(tp))


def explain(cfg: Config = Config()) -> list[dict]:
    """One row per key: ``key``, ``value`` (in ``cfg``), ``default`` (the dataclass's), ``type``,
    ``choices`` (where the value is one of a few words) and ``meaning``."""
    rows = []
    for section in dataclasses.fields(Config):
        cls = typing.get_type_hints(Config)[section.name]
        cls = next((a for a in typing.get_args(cls) if dataclasses.is_dataclass(a)), cls)  # Optional[X]
        value_section = getattr(cfg, section.name)
        comments = field_comments(cls)
        hints = typing.get_type_hints(cls, vars(config_module))
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            key = f"{section.name}.{f.name}"
            rows.append({"key": key, "value": None if value_section is None else getattr(value_section, f.name),
                         "default": default, "type": _type_name(hints[f.name]), "choices": _choices(hints[f.name]),
                         "meaning": comments.get(f.name, "")})
    return rows


def _json(value) -> str:
    return json.dumps(list(value) if isinstance(value, tuple) else value)


def explain_text(cfg: Config) -> str:
    """:func:`explain` as plain text, a key a line, marking the values that differ from the default."""
    lines = []
    for r in explain(cfg):
        changed = "*" if r["value"] != r["default"] else " "
        choices = f" ({' | '.join(r['choices'])})" if r["choices"] else ""
        lines.append(f"{changed} {r['key']} = {_json(r['value'])}   [{r['type']}, default {_json(r['default'])}]"
                     f"{choices}  {r['meaning']}".rstrip())
    return "* differs from the default\n" + "\n".join(lines)


def config_markdown() -> str:
    """The reference page ``docs/config.md``: every key of every section with default, type and meaning."""
    out = ["# Configuration keys", "",
           "Generated from `fcoslab/config/sections.py` by `python -m fcoslab.config.docs > docs/config.md` (a test keeps "
           "it current). `fcoslab config PRESET --explain` prints the same for a preset with its values. Set a key "
           "with `--set section.key=value`, in a JSON config file as `{\"section\": {\"key\": value}}`, or in "
           "Python with `load_config(PRESET, {\"section.key\": value})`.", ""]
    section = None
    for r in explain():
        name = r["key"].split(".")[0]
        if name != section:
            section = name
            out += ["", f"## `{name}`", "", "| key | default | type | meaning |", "|---|---|---|---|"]
        choices = f" One of: {', '.join(r['choices'])}." if r["choices"] else ""
        meaning = (r["meaning"] + choices).replace("|", "\\|").strip()
        out.append(f"| `{r['key']}` | `{_json(r['default'])}` | {r['type'].replace('|', 'or')} | {meaning} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.stdout.write(config_markdown())
