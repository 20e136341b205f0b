"""Printing results: rich tables for people, ``--output json`` for programs."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

from rich.console import Console
from rich.table import Table

console = Console(width=None if sys.stdout.isatty() else 200)


class OutputFormat(StrEnum):
    TABLE = "table"
    JSON = "json"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "-"
    return str(value)


def emit_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


def emit_list(rows: Sequence[dict[str, Any]], columns: Sequence[str], fmt: OutputFormat) -> None:
    if fmt is OutputFormat.JSON:
        emit_json(list(rows))
        return
    table = Table(show_header=True, header_style="bold")
    for column in columns:
        table.add_column(column.upper())
    for row in rows:
        table.add_row(*(_cell(row.get(column)) for column in columns))
    console.print(table)


def emit_one(row: dict[str, Any], fmt: OutputFormat, skip: Sequence[str] = ()) -> None:
    if fmt is OutputFormat.JSON:
        emit_json(row)
        return
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    for key, value in row.items():
        if key not in skip:
            table.add_row(key, _cell(value))
    console.print(table)
