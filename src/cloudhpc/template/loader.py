"""Load a template from YAML (keeping line numbers) or from Python objects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from cloudhpc.errors import TemplateError
from cloudhpc.template.findings import Finding, Level, from_pydantic
from cloudhpc.template.schema import Template
from cloudhpc.template.validate import validate_template

Path_ = tuple[str | int, ...]


def _line_map(node: yaml.Node, path: Path_, out: dict[Path_, int]) -> None:
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            kpath = (*path, str(key.value))
            out[kpath] = key.start_mark.line + 1
            _line_map(value, kpath, out)
            out[kpath] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_map(item, (*path, i), out)


def parse_yaml(text: str, source: str = "<template>") -> tuple[Any, dict[Path_, int]]:
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise TemplateError(
            [Finding(Level.ERROR, (), f"not valid YAML: {problem}", "fix the YAML syntax", line)],
            source,
        ) from None
    lines: dict[Path_, int] = {}
    if root is not None:
        _check_keys(root, source)
        _line_map(root, (), lines)
    try:
        return yaml.safe_load(text), lines
    except yaml.YAMLError as exc:  # e.g. a tag such as !!python/object/apply
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise TemplateError(
            [Finding(Level.ERROR, (), f"not a plain YAML template: {problem} (a tag is not "
                     "allowed)", "remove the tag (!!...); templates hold plain values",
                     mark.line + 1 if mark else None)], source) from None


def _check_keys(node: yaml.Node, source: str) -> None:
    """A key given twice is an error (YAML loaders keep the last one silently)."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key, value in node.value:
            name = str(key.value)
            if name in seen:
                raise TemplateError(
                    [Finding(Level.ERROR, (), f"duplicate key '{name}' (first on line "
                             f"{seen[name]})", "keep one of them",
                             key.start_mark.line + 1)], source)
            seen[name] = key.start_mark.line + 1
            _check_keys(value, source)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _check_keys(item, source)


def read_text(path: Path) -> str:
    """A template file's text; one clear error when it cannot be read or is not UTF-8."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise TemplateError(
            [Finding(Level.ERROR, (), f"cannot read template: {exc.strerror}",
                     "check the path", None)], str(path)) from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise TemplateError(
            [Finding(Level.ERROR, (), f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at "
                     f"offset {exc.start})", "save the template as UTF-8", line)],
            str(path)) from None


def check(data: Any, lines: dict[Path_, int] | None = None,
          running: list[tuple[str, str]] | None = None) -> tuple[Template | None, list[Finding]]:
    """Validate raw data; returns the model (if it parses) and every finding."""
    lines = lines or {}
    if not isinstance(data, dict):
        return None, [Finding(Level.ERROR, (), "the template must be a mapping of keys",
                              "start from examples/quickstart.yaml", 1)]
    try:
        model = Template.model_validate(data)
    except ValidationError as exc:
        return None, [from_pydantic(err, lines) for err in exc.errors()]
    return model, validate_template(model, lines, running or [])


def load(source: str | Path | dict[str, Any] | Template,
         running: list[tuple[str, str]] | None = None,
         provider: str | None = None) -> tuple[Template, list[Finding]]:
    """Load and validate (for PROVIDER when given: export checks a template for Azure
    whatever its own provider); raise TemplateError if any finding is an error."""
    name = ""
    lines: dict[Path_, int] = {}
    if isinstance(source, Template):
        data: Any = source.model_dump()
    elif isinstance(source, dict):
        data = source
    else:
        path = Path(source)
        name = str(path)
        text = read_text(path)
        data, lines = parse_yaml(text, name)
    if provider and isinstance(data, dict):
        data = {**data, "provider": provider}
    model, findings = check(data, lines, running)
    errors = [f for f in findings if f.level is Level.ERROR]
    if errors or model is None:
        raise TemplateError(errors or findings, name)
    return model, findings
