"""Shared CLI output: JSON or Rich tables, and one clear line per error."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cloudhpc.errors import CloudHPCError, TemplateError

# never emoji codes: a certificate fingerprint's ":AB:" (or a job name's ":cd:") is data
out = Console(emoji=False)
err = Console(stderr=True, emoji=False)


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    t = Table(title=title, title_justify="left")
    for col in columns:
        t.add_column(col)
    for row in rows:
        t.add_row(*[escape(str(v)) for v in row])  # values are data, never markup
    out.print(t)


def report_error(exc: CloudHPCError) -> int:
    """Print one line per problem (plus a hint) and return the exit code."""
    if isinstance(exc, TemplateError):
        prefix = f"{exc.source}: " if exc.source else ""
        for finding in exc.findings:
            err.print(f"[red]error[/red]: {prefix}{finding}", highlight=False, markup=True,
                      soft_wrap=True)
        return 2
    err.print(f"[red]error[/red]: {exc.message}", highlight=False, soft_wrap=True)
    if exc.hint:
        err.print(f"  hint: {exc.hint}", highlight=False, soft_wrap=True)
    return 1
