"""The GraphQL schema of an index, built from its SchemaSpec, in The Graph's dialect.

For an entity ``Account`` the query type has

- ``account(id: ID!): Account`` and
- ``accounts(where: Account_filter, orderBy: Account_orderBy, orderDirection: OrderDirection,
  first: Int = 100, skip: Int = 0): [Account!]!``.

``Account_filter`` has one key per operator and field: ``balance`` (equals), ``balance_not``,
``balance_gt``, ``_gte``, ``_lt``, ``_lte``, ``_in``, ``_not_in``, and for text (ID, String,
Bytes, references) ``_contains`` and ``_not_contains``; ``token_`` filters on the referenced
entity, ``accounts_`` on the deriving ones; ``and`` and ``or`` take lists of filters. Keys of
one filter are combined with AND.

A reference resolves to the referenced entity; a ``@derivedFrom`` field to a list that takes
the same arguments as the top-level list. References and derived lists are loaded in batches:
all the tokens of a page of accounts in one SELECT, the accounts of a page of tokens in one
SELECT numbered per token (ROW_NUMBER), so a query costs a few SELECTs, not one per row.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import graphql as gql
from graphql.utilities import value_from_ast_untyped

from ..schema import EntitySpec, FieldSpec, SchemaSpec
from .reader import Snapshot
from .sql import Compiler, FilterKey, PageArgs, is_text, row_dict

DEFAULT_FIRST = 100
MAX_FIRST = 1000

# Limitation: there is no time travel (The Graph's ``block: {number: N}`` argument) and no
# ordering by a field of a referenced entity (``orderBy: token__volume``); a query sees the
# latest committed state and orders by the entity's own fields. History tables would allow
# the first, a JOIN in Compiler.order the second.

NUMERIC_OPS = ("not", "gt", "gte", "lt", "lte", "in", "not_in")
TEXT_OPS = (*NUMERIC_OPS, "contains", "not_contains")
EQUALITY_OPS = ("not", "in", "not_in")


# -- scalars -----------------------------------------------------------------------------------


def _parse_bigint(value: Any) -> int:
    if isinstance(value, bool):
        raise gql.GraphQLError('BigInt takes a decimal string such as "1000", not a boolean')
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value, 10)
        except ValueError:
            pass
    raise gql.GraphQLError(f'BigInt takes a decimal integer string such as "1000"; got {value!r}')


def _parse_bigdecimal(value: Any) -> Decimal:
    if isinstance(value, int | float | str) and not isinstance(value, bool):
        try:
            number = Decimal(str(value))
        except InvalidOperation:
            number = Decimal("NaN")
        if number.is_finite():
            return number
    raise gql.GraphQLError(f'BigDecimal takes a decimal string such as "1.5"; got {value!r}')


def _parse_bytes(value: Any) -> str:
    if isinstance(value, str) and value.startswith("0x"):
        return value
    raise gql.GraphQLError(f"Bytes takes a 0x-prefixed hex string; got {value!r}")


def _parse_timestamp(value: Any) -> datetime:
    if isinstance(value, int) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            pass
    raise gql.GraphQLError(
        'Timestamp takes an ISO 8601 string such as "2023-07-13T17:38:11Z" '
        f"or Unix seconds; got {value!r}"
    )


def _scalar(name: str, description: str, parse: Any, literal_kinds: tuple) -> gql.GraphQLScalarType:
    def parse_literal(node: Any, variables: Any = None) -> Any:
        if not isinstance(node, literal_kinds):
            raise gql.GraphQLError(f"{name} cannot be written as {gql.print_ast(node)}")
        if isinstance(node, gql.IntValueNode):
            return parse(int(node.value))
        return parse(node.value)

    return gql.GraphQLScalarType(
        name,
        serialize=str,
        parse_value=parse,
        parse_literal=parse_literal,
        description=description,
    )


_STRINGY = (gql.StringValueNode,)
_NUMBERY = (gql.StringValueNode, gql.IntValueNode)

BigIntType = _scalar(
    "BigInt", "An integer of any size, as a decimal string.", _parse_bigint, _NUMBERY
)
BigDecimalType = _scalar(
    "BigDecimal",
    "A decimal number of any precision, as a string.",
    _parse_bigdecimal,
    (*_NUMBERY, gql.FloatValueNode),
)
BytesType = _scalar("Bytes", "Bytes as a 0x-prefixed lowercase hex string.", _parse_bytes, _STRINGY)
TimestampType = _scalar(
    "Timestamp", "A moment as an ISO 8601 string in UTC.", _parse_timestamp, _NUMBERY
)


def _json_literal(node: gql.ValueNode, variables: dict[str, Any] | None = None) -> Any:
    return value_from_ast_untyped(node, variables)


JsonType = gql.GraphQLScalarType(
    "Json",
    serialize=lambda v: v,
    parse_value=lambda v: v,
    parse_literal=_json_literal,
    description="Any JSON value.",
)

# Limitation: Int fields are GraphQL Int, 32-bit signed; a stored value beyond 2^31-1 makes
# that field an error in the answer. A user needing more declares the field BigInt.
SCALAR_TYPES: dict[str, gql.GraphQLScalarType] = {
    "ID": gql.GraphQLID,
    "String": gql.GraphQLString,
    "Int": gql.GraphQLInt,
    "Float": gql.GraphQLFloat,
    "Boolean": gql.GraphQLBoolean,
    "BigInt": BigIntType,
    "BigDecimal": BigDecimalType,
    "Bytes": BytesType,
    "Timestamp": TimestampType,
    "Json": JsonType,
}

OrderDirection = gql.GraphQLEnumType(
    "OrderDirection", {"asc": "asc", "desc": "desc"}, description="Sort order."
)


def query_names(entity: str) -> tuple[str, str]:
    """(one, many): ``Account`` -> ``account``, ``accounts``; ``Entry`` -> ``entries``."""
    one = entity[0].lower() + entity[1:]
    if one.endswith("y") and len(one) > 1 and one[-2] not in "aeiou":
        many = one[:-1] + "ies"
    elif one.endswith(("s", "x", "z", "ch", "sh")):
        many = one + "es"
    else:
        many = one + "s"
    return one, many


# -- per-request loading -----------------------------------------------------------------------


class Loader:
    """Gathers the loads that GraphQL's resolvers ask for concurrently into one SELECT each."""

    def __init__(self, snapshot: Snapshot, compiler: Compiler, schema: SchemaSpec) -> None:
        self.snapshot = snapshot
        self.compiler = compiler
        self.schema = schema
        self._entities: dict[tuple[str, str], asyncio.Future] = {}
        self._pending_ids: dict[str, list[str]] = {}
        self._derived: dict[tuple, dict[str, asyncio.Future]] = {}
        self._pending_derived: dict[tuple, list[str]] = {}
        self._derived_args: dict[tuple, tuple] = {}
        self._flush_task: asyncio.Task | None = None

    async def fetch(self, sql: str, params: list[Any]) -> list[tuple]:
        return await self.snapshot.fetch(sql, params)

    def _schedule(self) -> None:
        if self._flush_task is None:
            self._flush_task = asyncio.ensure_future(self._flush())

    async def _flush(self) -> None:
        # Let every resolver started in this round register its load before one query runs.
        for _ in range(3):
            await asyncio.sleep(0)
        self._flush_task = None
        pending_ids, self._pending_ids = self._pending_ids, {}
        pending_derived, self._pending_derived = self._pending_derived, {}
        for name, ids in pending_ids.items():
            await self._load_ids(name, ids)
        for key, parents in pending_derived.items():
            await self._load_derived(key, parents)

    async def _load_ids(self, name: str, ids: list[str]) -> None:
        entity = self.schema.entities[name]
        try:
            found: dict[str, dict] = {}
            for start in range(0, len(ids), 500):
                st = self.compiler.by_ids(entity, self.snapshot.dialect, ids[start : start + 500])
                for row in await self.fetch(st.sql, st.params):
                    found[row[0]] = row_dict(entity, row)
        except Exception as exc:
            for i in ids:
                self._entities[(name, i)].set_exception(exc)
            return
        for i in ids:
            self._entities[(name, i)].set_result(found.get(i))

    async def _load_derived(self, key: tuple, parents: list[str]) -> None:
        name, back_name, args = self._derived_args[key]
        entity = self.schema.entities[name]
        back = entity.field(back_name)
        assert back is not None
        futures = self._derived[key]
        try:
            by_parent: dict[str, list[dict]] = {p: [] for p in parents}
            for start in range(0, len(parents), 500):
                st = self.compiler.derived_pages(
                    entity, back, self.snapshot.dialect, parents[start : start + 500], args
                )
                for row in await self.fetch(st.sql, st.params):
                    by_parent[row[-1]].append(row_dict(entity, row[:-1]))
        except Exception as exc:
            for p in parents:
                futures[p].set_exception(exc)
            return
        for p in parents:
            futures[p].set_result(by_parent[p])

    async def entity(self, name: str, entity_id: str | None) -> dict | None:
        if entity_id is None:
            return None
        key = (name, entity_id)
        future = self._entities.get(key)
        if future is None:
            future = self._entities[key] = asyncio.get_running_loop().create_future()
            self._pending_ids.setdefault(name, []).append(entity_id)
            self._schedule()
        return await future

    async def derived(self, key: tuple, live: tuple, parent_id: str) -> list[dict]:
        """The page of a derived list of one parent; ``key`` identifies the arguments,
        ``live`` holds them as the compiler takes them."""
        self._derived_args[key] = live
        futures = self._derived.setdefault(key, {})
        future = futures.get(parent_id)
        if future is None:
            future = futures[parent_id] = asyncio.get_running_loop().create_future()
            self._pending_derived.setdefault(key, []).append(parent_id)
            self._schedule()
        return await future

    async def page(self, name: str, args: PageArgs) -> list[dict]:
        entity = self.schema.entities[name]
        st = self.compiler.page(entity, self.snapshot.dialect, args)
        return [row_dict(entity, row) for row in await self.fetch(st.sql, st.params)]


class RequestContext:
    """What resolvers get as ``info.context``."""

    def __init__(self, loader: Loader, meta: Any) -> None:
        self.loader = loader
        self.meta = meta  # async () -> list of chain dicts, read in the same snapshot


def _page_args(args: dict[str, Any]) -> PageArgs:
    first = args.get("first", DEFAULT_FIRST)
    skip = args.get("skip", 0)
    if first is None:
        first = DEFAULT_FIRST
    if skip is None:
        skip = 0
    if first > MAX_FIRST:
        raise gql.GraphQLError(
            f"first: {first} is more than the page limit of {MAX_FIRST}; ask for at most "
            f"{MAX_FIRST} and page on with skip (or with a where filter on the order field)"
        )
    if first < 0 or skip < 0:
        raise gql.GraphQLError("first and skip must not be negative")
    desc = args.get("orderDirection") == "desc"
    return PageArgs(args.get("where"), args.get("orderBy"), desc, first, skip)


def _freeze(value: Any) -> Any:
    """A hashable, order-preserving key for filter arguments."""
    if isinstance(value, dict):
        return tuple((k, _freeze(v)) for k, v in value.items())
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


# -- building the schema -----------------------------------------------------------------------


class GraphBuilder:
    def __init__(self, spec: SchemaSpec) -> None:
        self.spec = spec
        self.objects: dict[str, gql.GraphQLObjectType] = {}
        self.filters: dict[str, gql.GraphQLInputObjectType] = {}
        self.orders: dict[str, gql.GraphQLEnumType] = {}
        self.enums = {
            name: gql.GraphQLEnumType(name, {v: v for v in values})
            for name, values in spec.enums.items()
        }
        self.filter_keys: dict[str, dict[str, FilterKey]] = {}

    def build(self) -> tuple[gql.GraphQLSchema, Compiler]:
        for entity in self.spec.entities.values():
            self.filter_keys[entity.name] = {}
            self.filters[entity.name] = self.filter_type(entity)
            self.orders[entity.name] = self.order_type(entity)
        for entity in self.spec.entities.values():
            self.objects[entity.name] = self.object_type(entity)
        query = gql.GraphQLObjectType("Query", self.query_fields)
        schema = gql.GraphQLSchema(query=query)
        errors = gql.validate_schema(schema)
        if errors:  # pragma: no cover - a SchemaSpec that passed schema.py builds cleanly
            raise ValueError("; ".join(e.message for e in errors))
        return schema, Compiler(self.spec, self.filter_keys)

    def output_type(self, f: FieldSpec) -> gql.GraphQLOutputType:
        named: Any = self.enums[f.type_name] if f.kind == "enum" else SCALAR_TYPES[f.type_name]
        out: Any = gql.GraphQLList(named) if f.is_list else named
        return gql.GraphQLNonNull(out) if f.required else out

    def filter_input(self, f: FieldSpec) -> Any:
        if f.kind == "enum":
            return self.enums[f.type_name]
        if f.kind == "ref":
            return gql.GraphQLID
        return SCALAR_TYPES[f.type_name]

    def filter_type(self, entity: EntitySpec) -> gql.GraphQLInputObjectType:
        keys = self.filter_keys[entity.name]
        for f in entity.fields:
            if f.kind == "derived":
                keys[f.name + "_"] = FilterKey(f, "nested")
                continue
            # Limitation: list and Json fields cannot be filtered on; a user filters them in
            # the client. Operators like The Graph's _contains on lists would lift it.
            if f.is_list or f.type_name == "Json":
                continue
            if f.kind == "ref":
                keys[f.name + "_"] = FilterKey(f, "nested")
            ops = (
                TEXT_OPS
                if is_text(f) and f.kind != "enum"
                else EQUALITY_OPS
                if f.kind == "enum" or f.type_name == "Boolean"
                else NUMERIC_OPS
            )
            keys[f.name] = FilterKey(f, "eq")
            for op in ops:
                keys[f"{f.name}_{op}"] = FilterKey(f, op)

        def fields() -> dict[str, gql.GraphQLInputField]:
            out: dict[str, gql.GraphQLInputField] = {}
            for key, meaning in keys.items():
                f = meaning.field
                if meaning.op == "nested":
                    out[key] = gql.GraphQLInputField(self.filters[f.type_name])
                elif meaning.op in ("in", "not_in"):
                    out[key] = gql.GraphQLInputField(
                        gql.GraphQLList(gql.GraphQLNonNull(self.filter_input(f)))
                    )
                else:
                    out[key] = gql.GraphQLInputField(self.filter_input(f))
            both = gql.GraphQLList(gql.GraphQLNonNull(self.filters[entity.name]))
            out["and"] = gql.GraphQLInputField(both, description="Every filter matches.")
            out["or"] = gql.GraphQLInputField(both, description="Some filter matches.")
            return out

        return gql.GraphQLInputObjectType(f"{entity.name}_filter", fields)

    def order_type(self, entity: EntitySpec) -> gql.GraphQLEnumType:
        values = {
            f.name: f.name for f in entity.stored_fields if not f.is_list and f.type_name != "Json"
        }
        return gql.GraphQLEnumType(f"{entity.name}_orderBy", values)

    def list_args(self, name: str) -> dict[str, gql.GraphQLArgument]:
        return {
            "where": gql.GraphQLArgument(self.filters[name]),
            "orderBy": gql.GraphQLArgument(self.orders[name]),
            "orderDirection": gql.GraphQLArgument(OrderDirection),
            "first": gql.GraphQLArgument(
                gql.GraphQLInt,
                default_value=DEFAULT_FIRST,
                description=f"Page size, at most {MAX_FIRST}.",
            ),
            "skip": gql.GraphQLArgument(gql.GraphQLInt, default_value=0),
        }

    def object_type(self, entity: EntitySpec) -> gql.GraphQLObjectType:
        def fields() -> dict[str, gql.GraphQLField]:
            out: dict[str, gql.GraphQLField] = {}
            for f in entity.fields:
                if f.kind == "ref":
                    # Nullable whatever the schema says: a reference to an entity that was
                    # never stored answers null instead of voiding the whole object.
                    out[f.name] = gql.GraphQLField(
                        self.objects[f.type_name], resolve=_resolve_ref(f)
                    )
                elif f.kind == "derived":
                    target = gql.GraphQLNonNull(self.objects[f.type_name])
                    out[f.name] = gql.GraphQLField(
                        gql.GraphQLNonNull(gql.GraphQLList(target)),
                        args=self.list_args(f.type_name),
                        resolve=_resolve_derived(f),
                    )
                else:
                    out[f.name] = gql.GraphQLField(self.output_type(f))
            return out

        return gql.GraphQLObjectType(entity.name, fields)

    def query_fields(self) -> dict[str, gql.GraphQLField]:
        out: dict[str, gql.GraphQLField] = {}
        for entity in self.spec.entities.values():
            one, many = query_names(entity.name)
            if one == many:
                many = one + "_collection"
            obj = self.objects[entity.name]
            out[one] = gql.GraphQLField(
                obj,
                args={"id": gql.GraphQLArgument(gql.GraphQLNonNull(gql.GraphQLID))},
                resolve=_resolve_one(entity.name),
                description=f"The {entity.name} with this id, or null.",
            )
            out[many] = gql.GraphQLField(
                gql.GraphQLNonNull(gql.GraphQLList(gql.GraphQLNonNull(obj))),
                args=self.list_args(entity.name),
                resolve=_resolve_many(entity.name),
                description=f"A page of {entity.name} entities.",
            )
        out["_meta"] = gql.GraphQLField(gql.GraphQLNonNull(MetaType), resolve=_resolve_meta)
        return out


ChainMetaType = gql.GraphQLObjectType(
    "_ChainMeta_",
    {
        "chain_id": gql.GraphQLField(gql.GraphQLNonNull(gql.GraphQLInt)),
        "block": gql.GraphQLField(
            gql.GraphQLNonNull(gql.GraphQLInt),
            description="Every event of blocks up to this one is in the answer.",
        ),
        "events": gql.GraphQLField(
            gql.GraphQLNonNull(gql.GraphQLInt), description="Events handled on this chain."
        ),
        "end_block": gql.GraphQLField(gql.GraphQLInt, description="Null: follows the head."),
        "head": gql.GraphQLField(gql.GraphQLInt, description="Highest block known to exist."),
        "ready": gql.GraphQLField(
            gql.GraphQLBoolean,
            description="Reached the end block, or close to the head; null when unknown "
            "(a live chain with no indexer in this process).",
        ),
    },
)
MetaType = gql.GraphQLObjectType(
    "_Meta_",
    {
        "chains": gql.GraphQLField(
            gql.GraphQLNonNull(gql.GraphQLList(gql.GraphQLNonNull(ChainMetaType)))
        )
    },
)


def _resolve_one(name: str) -> Any:
    async def resolve(_root: Any, info: gql.GraphQLResolveInfo, id: str) -> Any:
        return await info.context.loader.entity(name, id)

    return resolve


def _resolve_many(name: str) -> Any:
    async def resolve(_root: Any, info: gql.GraphQLResolveInfo, **args: Any) -> Any:
        return await info.context.loader.page(name, _page_args(args))

    return resolve


def _resolve_ref(f: FieldSpec) -> Any:
    async def resolve(parent: dict, info: gql.GraphQLResolveInfo) -> Any:
        return await info.context.loader.entity(f.type_name, parent.get(f.name))

    return resolve


def _resolve_derived(f: FieldSpec) -> Any:
    async def resolve(parent: dict, info: gql.GraphQLResolveInfo, **args: Any) -> Any:
        page = _page_args(args)
        live = (f.type_name, f.derived_from, page)
        key = (
            f.type_name,
            f.derived_from,
            _freeze(page.where),
            page.order_by,
            page.desc,
            page.first,
            page.skip,
        )
        return await info.context.loader.derived(key, live, parent["id"])

    return resolve


async def _resolve_meta(_root: Any, info: gql.GraphQLResolveInfo) -> Any:
    return {"chains": await info.context.meta()}


def build_graphql_schema(spec: SchemaSpec) -> tuple[gql.GraphQLSchema, Compiler]:
    """The executable GraphQL schema of an index, and the SQL compiler its resolvers use."""
    return GraphBuilder(spec).build()
