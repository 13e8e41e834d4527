"""SQL for the API's reads: filters, ordering, pages, in SQLite's or PostgreSQL's spelling.

Values cross two borders here. Going in, a filter value is put in the form the column holds
(decimal text for BigInt on SQLite, whose column collation then compares it as a number;
NUMERIC on PostgreSQL). Coming out, a row becomes a dict of JSON-ready values, the same on
both backends: BigInt and BigDecimal as decimal strings, Timestamp as ISO 8601 in UTC.

Text columns are compared with ``COLLATE "C"`` on PostgreSQL, so ids sort byte-wise there as
they do on SQLite, whatever the database's locale.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from ..schema import EntitySpec, FieldSpec, SchemaSpec
from ..storage.base import quote

# Limitation: on SQLite a BigInt or BigDecimal filter or order calls the Python collation
# once per comparison, so ordering ~5,000 rows by a BigInt takes ~0.1 s and grows with the
# table; an @index on the field lets SQLite use the collated index. PostgreSQL's NUMERIC is
# native and has no such cost.
TEXT_TYPES = ("ID", "String", "Bytes")
COMPARISONS = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


def is_text(f: FieldSpec) -> bool:
    return f.kind in ("ref", "enum") or (f.kind == "scalar" and f.type_name in TEXT_TYPES)


def to_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def db_value(f: FieldSpec, value: Any, dialect: str) -> Any:
    """A filter value (already parsed by the GraphQL scalar) as the column stores it."""
    if value is None:
        return None
    t = f.type_name if f.kind == "scalar" else "String"
    if t == "Bytes":
        return value.lower()
    if t == "BigInt":
        return str(value) if dialect == "sqlite" else Decimal(value)
    if t == "BigDecimal":
        return str(value) if dialect == "sqlite" else Decimal(value)
    if t == "Timestamp":
        moment = to_utc(value)
        return moment.isoformat(timespec="microseconds") if dialect == "sqlite" else moment
    if t == "Boolean":
        return int(value) if dialect == "sqlite" else bool(value)
    return value


def _timestamp_out(value: Any) -> str:
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return to_utc(moment).isoformat()


def _out(f: FieldSpec, value: Any) -> Any:
    if value is None:
        return None
    if f.is_list:
        items = json.loads(value) if isinstance(value, str) else value
        if f.type_name == "Timestamp":
            return [None if v is None else _timestamp_out(v) for v in items]
        return items
    t = f.type_name if f.kind == "scalar" else ""
    if t == "BigInt":
        return str(int(value))
    if t == "BigDecimal":
        return format(Decimal(value), "f")
    if t == "Timestamp":
        return _timestamp_out(value)
    if t == "Boolean":
        return bool(value)
    if t == "Json":
        return json.loads(value) if isinstance(value, str) else value
    return value


def row_dict(entity: EntitySpec, row: tuple) -> dict[str, Any]:
    return {f.name: _out(f, v) for f, v in zip(entity.stored_fields, row, strict=False)}


@dataclass
class Statement:
    """SQL text being built, with its parameters."""

    dialect: str
    params: list[Any] = field(default_factory=list)
    sql: str = ""

    def param(self, value: Any) -> str:
        self.params.append(value)
        return "?" if self.dialect == "sqlite" else f"${len(self.params)}"

    def column(self, f: FieldSpec, table: str | None = None) -> str:
        name = quote(f.name) if table is None else f"{table}.{quote(f.name)}"
        if self.dialect == "postgres" and is_text(f):
            return f'{name} COLLATE "C"'
        return name


@dataclass(frozen=True)
class PageArgs:
    """The arguments of a list field: which rows, in which order, which page."""

    where: dict[str, Any] | None
    order_by: str | None
    desc: bool
    first: int
    skip: int


@dataclass(frozen=True)
class FilterKey:
    """What one key of an ``<Entity>_filter`` input means."""

    field: FieldSpec
    op: str  # eq, not, gt, gte, lt, lte, in, not_in, contains, not_contains, nested


class Compiler:
    """Turns GraphQL arguments into SQL for one schema."""

    def __init__(self, schema: SchemaSpec, filter_keys: dict[str, dict[str, FilterKey]]) -> None:
        self.schema = schema
        self.filter_keys = filter_keys

    def columns(self, entity: EntitySpec, table: str | None = None) -> str:
        prefix = "" if table is None else table + "."
        return ", ".join(prefix + quote(f.name) for f in entity.stored_fields)

    def where(self, st: Statement, entity: EntitySpec, where: dict[str, Any] | None) -> str:
        """The SQL condition of a filter; ``TRUE`` when it is empty."""
        if not where:
            return "1=1"
        clauses: list[str] = []
        keys = self.filter_keys[entity.name]
        for key, value in where.items():
            if key == "and":
                clauses += [f"({self.where(st, entity, w)})" for w in value or ()]
                continue
            if key == "or":
                parts = [f"({self.where(st, entity, w)})" for w in value or ()]
                clauses.append("(" + (" OR ".join(parts) or "1=0") + ")")
                continue
            clauses.append(self.condition(st, keys[key], value))
        return " AND ".join(clauses) or "1=1"

    def condition(self, st: Statement, key: FilterKey, value: Any) -> str:
        f, op = key.field, key.op
        if op == "nested":
            return self.nested(st, f, value)
        col = st.column(f)
        plain = quote(f.name)
        if op == "eq":
            if value is None:
                return f"{plain} IS NULL"
            return f"{col} = {st.param(db_value(f, value, st.dialect))}"
        if op == "not":
            if value is None:
                return f"{plain} IS NOT NULL"
            return f"({plain} IS NULL OR {col} <> {st.param(db_value(f, value, st.dialect))})"
        if op in COMPARISONS:
            if value is None:
                return "1=0"
            return f"{col} {COMPARISONS[op]} {st.param(db_value(f, value, st.dialect))}"
        if op in ("in", "not_in"):
            values = [db_value(f, v, st.dialect) for v in value or () if v is not None]
            if not values:
                return "1=0" if op == "in" else "1=1"
            marks = ", ".join(st.param(v) for v in values)
            if op == "in":
                return f"{col} IN ({marks})"
            return f"({plain} IS NULL OR {col} NOT IN ({marks}))"
        if op in ("contains", "not_contains"):
            if value is None:
                return "1=0"
            mark = st.param(db_value(f, value, st.dialect))
            found = f"instr({plain}, {mark}) > 0"
            if st.dialect == "postgres":
                found = f"strpos({plain}, {mark}) > 0"
            return found if op == "contains" else f"({plain} IS NULL OR NOT {found})"
        raise AssertionError(f"unknown filter operator {op}")

    def nested(self, st: Statement, f: FieldSpec, value: dict[str, Any] | None) -> str:
        """``token_: {...}`` (the referenced entity matches) or ``accounts_: {...}`` (some
        deriving entity matches)."""
        target = self.schema.entities[f.type_name]
        inner = self.where(st, target, value)
        table = quote(target.name)
        if f.kind == "ref":
            return f'{quote(f.name)} IN (SELECT "id" FROM {table} WHERE {inner})'
        back = quote(f.derived_from or "")
        return f'"id" IN (SELECT {back} FROM {table} WHERE {back} IS NOT NULL AND {inner})'

    def order(self, st: Statement, entity: EntitySpec, order_by: str | None, desc: bool) -> str:
        direction = "DESC" if desc else "ASC"
        # Stated explicitly because the backends' defaults differ; nulls sort as if largest.
        nulls = "NULLS FIRST" if desc else "NULLS LAST"
        id_field = entity.stored_fields[0]
        parts = []
        if order_by is not None and order_by != "id":
            f = entity.field(order_by)
            assert f is not None
            parts.append(f"{st.column(f)} {direction} {nulls}")
        # The id breaks ties, so pages never overlap or skip a row.
        parts.append(f"{st.column(id_field)} {direction}")
        return ", ".join(parts)

    def page(self, entity: EntitySpec, dialect: str, args: PageArgs) -> Statement:
        st = Statement(dialect)
        condition = self.where(st, entity, args.where)
        ordering = self.order(st, entity, args.order_by, args.desc)
        st.sql = (
            f"SELECT {self.columns(entity)} FROM {quote(entity.name)} WHERE {condition} "
            f"ORDER BY {ordering} LIMIT {st.param(args.first)} OFFSET {st.param(args.skip)}"
        )
        return st

    def by_ids(self, entity: EntitySpec, dialect: str, ids: list[str]) -> Statement:
        st = Statement(dialect)
        marks = ", ".join(st.param(i) for i in ids)
        st.sql = f'SELECT {self.columns(entity)} FROM {quote(entity.name)} WHERE "id" IN ({marks})'
        return st

    def derived_pages(
        self,
        entity: EntitySpec,
        back: FieldSpec,
        dialect: str,
        parent_ids: list[str],
        args: PageArgs,
    ) -> Statement:
        """One page per parent in one query: the rows whose ``back`` field holds a parent id,
        numbered per parent in the requested order. The parent id comes last in each row."""
        st = Statement(dialect)
        marks = ", ".join(st.param(i) for i in parent_ids)
        condition = self.where(st, entity, args.where)
        ordering = self.order(st, entity, args.order_by, args.desc)
        parent = quote(back.name)
        numbered = (
            f"SELECT {self.columns(entity)}, {parent} AS _parent, ROW_NUMBER() OVER "
            f"(PARTITION BY {parent} ORDER BY {ordering}) AS _n FROM {quote(entity.name)} "
            f"WHERE {parent} IN ({marks}) AND {condition}"
        )
        low, high = st.param(args.skip), st.param(args.skip + args.first)
        st.sql = (
            f"SELECT {self.columns(entity, '_p')}, _p._parent FROM ({numbered}) AS _p "
            f"WHERE _p._n > {low} AND _p._n <= {high} ORDER BY _p._parent, _p._n"
        )
        return st
