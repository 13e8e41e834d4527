"""Conversions between entity values and database values, per backend.

A converter is None where the value goes in or comes out as it is: most columns need none,
and the write path skips them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

from ..schema import FieldSpec

Convert = Callable[[Any], Any] | None


def _json_item(type_name: str) -> Callable[[Any], Any]:
    # Inside JSON, big numbers travel as strings so no JSON reader rounds them.
    if type_name in ("BigInt", "BigDecimal"):
        return str
    if type_name == "Timestamp":
        return lambda v: v.isoformat()
    return lambda v: v


def _json_item_back(type_name: str) -> Callable[[Any], Any]:
    if type_name == "BigInt":
        return int
    if type_name == "BigDecimal":
        return Decimal
    if type_name == "Timestamp":
        return datetime.fromisoformat
    return lambda v: v


def _list_to_text(f: FieldSpec) -> Callable[[Any], Any]:
    item = _json_item(f.type_name)
    return lambda v: None if v is None else json.dumps([item(x) for x in v])


def _list_from_text(f: FieldSpec) -> Callable[[Any], Any]:
    item = _json_item_back(f.type_name)
    return lambda v: None if v is None else [item(x) for x in json.loads(v)]


def _optional(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda v: None if v is None else fn(v)


def sqlite_to_db(f: FieldSpec) -> Convert:
    if f.is_list:
        return _list_to_text(f)
    t = f.type_name
    if t in ("BigInt", "BigDecimal"):
        return _optional(str)
    if t == "Timestamp":
        return _optional(lambda v: v.isoformat(timespec="microseconds"))
    if t == "Json":
        return _optional(json.dumps)
    return None


def sqlite_from_db(f: FieldSpec) -> Convert:
    if f.is_list:
        return _list_from_text(f)
    t = f.type_name
    if t == "BigInt":
        return _optional(int)
    if t == "BigDecimal":
        return _optional(Decimal)
    if t == "Boolean":
        return _optional(bool)
    if t == "Timestamp":
        return _optional(datetime.fromisoformat)
    if t == "Json":
        return _optional(json.loads)
    return None


def postgres_to_db(f: FieldSpec) -> Convert:
    if f.is_list:
        return _list_to_text(f)
    if f.type_name == "Json":
        return _optional(json.dumps)
    return None


def postgres_from_db(f: FieldSpec) -> Convert:
    """Values of an entity read, NUMERIC columns selected as text."""
    if f.is_list:
        return _list_from_text(f)
    if f.type_name == "BigInt":
        return _optional(int)
    if f.type_name == "BigDecimal":
        return _optional(Decimal)
    if f.type_name == "Json":
        return _optional(json.loads)
    return None


def row_converter(converters: list[Convert]) -> Callable[[tuple], tuple] | None:
    """One function converting a whole row, or None when no column needs converting.

    Straight-line code (``(row[0], c1(row[1]), ...)``): it runs for every row written.
    """
    if all(c is None for c in converters):
        return None
    items = ", ".join(
        f"row[{i}]" if c is None else f"c{i}(row[{i}])" for i, c in enumerate(converters)
    )
    namespace: dict[str, Any] = {f"c{i}": c for i, c in enumerate(converters) if c is not None}
    exec(f"def convert(row):\n    return ({items},)", namespace)
    return namespace["convert"]  # type: ignore[no-any-return]


def numeric_text(f: FieldSpec) -> Convert:
    """NUMERIC columns as decimal text: asyncpg encodes a number as NUMERIC several times
    slower than PostgreSQL parses its text (``bench/bench_engine.py``)."""
    if f.is_list or f.type_name not in ("BigInt", "BigDecimal"):
        return None
    return str if f.required and f.name != "id" else _optional(str)


SQLITE_TYPES = {
    "ID": "TEXT",
    "String": "TEXT",
    "Bytes": "TEXT",
    "Int": "INTEGER",
    "Float": "REAL",
    "Boolean": "INTEGER",
    "BigInt": "TEXT COLLATE evmflow_bigint",
    "BigDecimal": "TEXT COLLATE evmflow_decimal",
    "Timestamp": "TEXT",
    "Json": "TEXT",
}

POSTGRES_TYPES = {
    "ID": "TEXT",
    "String": "TEXT",
    "Bytes": "TEXT",
    "Int": "BIGINT",
    "Float": "DOUBLE PRECISION",
    "Boolean": "BOOLEAN",
    "BigInt": "NUMERIC",
    "BigDecimal": "NUMERIC",
    "Timestamp": "TIMESTAMPTZ",
    "Json": "JSONB",
}


def column_type(f: FieldSpec, types: dict[str, str], list_type: str) -> str:
    if f.is_list:
        return list_type
    if f.kind in ("ref", "enum"):
        return "TEXT"
    return types[f.type_name]
