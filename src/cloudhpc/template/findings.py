"""Validation findings: level, field path, message, hint and source line."""

from __future__ import annotations

import difflib
import enum
import types
import typing
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from pydantic_core import ErrorDetails

from cloudhpc.template.schema import Template

Loc = tuple[str | int, ...]


class Level(enum.Enum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


@dataclass(frozen=True)
class Finding:
    level: Level
    path: Loc
    message: str
    hint: str = ""
    line: int | None = None

    @property
    def where(self) -> str:
        return format_path(self.path) or "(template)"

    def __str__(self) -> str:
        line = f", line {self.line}" if self.line else ""
        hint = f" — {self.hint}" if self.hint else ""
        return f"{self.where}: {self.message}{line}{hint}"

    def as_dict(self) -> dict[str, Any]:
        return {"level": self.level.value, "path": self.where, "message": self.message,
                "hint": self.hint, "line": self.line}


def format_path(path: Loc) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def line_of(lines: dict[Loc, int], path: Loc) -> int | None:
    """The line of the path, or of its nearest ancestor that has one."""
    for cut in range(len(path), -1, -1):
        if path[:cut] in lines:
            return lines[path[:cut]]
    return None


def _model_at(path: Loc) -> type[BaseModel] | None:
    """The pydantic model class that holds the keys at `path`."""
    model: Any = Template
    for part in path:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        ann = field.annotation
        while typing.get_origin(ann) in (list, typing.Union, types.UnionType):
            ann = next(a for a in typing.get_args(ann) if a is not type(None))
        model = ann
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _expected(err: ErrorDetails) -> str:
    kind = err["type"]
    if kind.startswith("int"):
        return "a whole number"
    if kind.startswith("bool"):
        return "true or false"
    if kind.startswith("string"):
        return "a string"
    if kind in ("list_type",):
        return "a list"
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return "a mapping of keys"
    return ""


def from_pydantic(err: ErrorDetails, lines: dict[Loc, int]) -> Finding:
    path: Loc = tuple(err["loc"])
    line = line_of(lines, path)
    if err["type"] == "extra_forbidden":
        key = str(path[-1])
        model = _model_at(path[:-1])
        known = list(model.model_fields) if model else []
        near = difflib.get_close_matches(key, known, n=1, cutoff=0.5)
        hint = f"did you mean '{near[0]}'?" if near else f"allowed keys: {', '.join(known)}"
        return Finding(Level.ERROR, path, f"unknown key '{key}'", hint, line)
    if err["type"] == "missing":
        return Finding(Level.ERROR, path, "required key is missing",
                       f"add '{path[-1]}' (see `cloudhpc schema`)", line)
    got = err.get("input")
    shown = repr(got) if not isinstance(got, dict | list) else type(got).__name__
    expected = _expected(err)
    message = f"expected {expected}, got {shown}" if expected else f"{err['msg']} (got {shown})"
    return Finding(Level.ERROR, path, message, "see `cloudhpc schema` for the format", line)
