"""Entity classes built from the schema, and the value checks behind ``context.X.set``.

The in-memory store and the database hold an entity as a *row*: a tuple of its stored field
values in schema order, ``id`` first. Rows are immutable, so a handler that keeps mutating an
object after ``set`` cannot change what an earlier batch is committing. Handlers see entity
objects; ``set`` turns one into a row (checking every value), ``get`` turns a row into a new
object.

Python values by schema type: ID, String, Bytes (``0x`` lowercase hex), enums and references
(the referenced entity's id) are ``str``; Int and BigInt are ``int``; Float ``float``; Boolean
``bool``; BigDecimal ``decimal.Decimal``; Timestamp a timezone-aware ``datetime`` (ints and
floats are read as Unix seconds); Json any JSON value; a list field is a ``list``.
"""

from __future__ import annotations

import keyword
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from .errors import EntityError
from .schema import EntitySpec, FieldSpec, SchemaSpec

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_HEX_BYTES = re.compile(r"0[xX](?:[0-9a-fA-F]{2})*").fullmatch


def attribute_name(name: str) -> str:
    """The Python attribute for a schema or ABI name: keywords get a trailing underscore."""
    return name + "_" if keyword.iskeyword(name) else name


Check = Callable[[Any], Any]


def _fail(entity: str, field: str, expected: str, value: Any) -> EntityError:
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return EntityError(
        f"{entity}.{field} expects {expected}, got {type(value).__name__} {shown}",
        hint=f"convert the value before setting {entity}.{field}",
    )


# Lowercase hex strings that passed a Bytes check: addresses and hashes recur, and a set lookup
# is several times cheaper than the regular expression. Bounded by clearing.
_KNOWN_HEX: set[str] = set()
_KNOWN_HEX_LIMIT = 200_000


def _remember_hex(v: str) -> None:
    if len(_KNOWN_HEX) >= _KNOWN_HEX_LIMIT:
        _KNOWN_HEX.clear()
    _KNOWN_HEX.add(v)


def _scalar_check(entity: str, field: FieldSpec, type_name: str, enums: dict) -> Check:
    name = field.name

    if type_name in ("ID", "String"):

        def check(v: Any) -> Any:
            if type(v) is str:
                return v
            raise _fail(entity, name, "a str", v)
    elif type_name == "Bytes":

        def check(v: Any) -> Any:
            if isinstance(v, bytes | bytearray):
                return "0x" + bytes(v).hex()
            if type(v) is str and _HEX_BYTES(v):
                lower = v.lower()
                if lower is v or lower == v:
                    _remember_hex(v)
                return lower
            raise _fail(entity, name, "bytes or a 0x-prefixed even-length hex str", v)
    elif type_name == "Int":

        def check(v: Any) -> Any:
            if type(v) is int and INT64_MIN <= v <= INT64_MAX:
                return v
            raise _fail(entity, name, "an int within 64 bits (use BigInt for more)", v)
    elif type_name == "BigInt":

        def check(v: Any) -> Any:
            if type(v) is int:
                return v
            raise _fail(entity, name, "an int", v)
    elif type_name == "Float":

        def check(v: Any) -> Any:
            if type(v) is float or (type(v) is int and abs(v) < 2**53):
                return float(v)
            raise _fail(entity, name, "a float", v)
    elif type_name == "Boolean":

        def check(v: Any) -> Any:
            if type(v) is bool:
                return v
            raise _fail(entity, name, "a bool", v)
    elif type_name == "BigDecimal":

        def check(v: Any) -> Any:
            if type(v) is Decimal and v.is_finite():
                return v
            if type(v) is int:
                return Decimal(v)
            if type(v) is str:
                try:
                    d = Decimal(v)
                except InvalidOperation:
                    pass
                else:
                    if d.is_finite():
                        return d
            raise _fail(entity, name, "a finite Decimal (or int or decimal str)", v)
    elif type_name == "Timestamp":

        def check(v: Any) -> Any:
            if isinstance(v, datetime):
                return v.replace(tzinfo=UTC) if v.tzinfo is None else v.astimezone(UTC)
            if type(v) in (int, float) and math.isfinite(v):
                return datetime.fromtimestamp(v, UTC)
            raise _fail(entity, name, "a datetime or Unix seconds", v)
    elif type_name == "Json":

        def check(v: Any) -> Any:
            try:
                orjson.dumps(v)
            except TypeError:
                raise _fail(entity, name, "a JSON value", v) from None
            return v
    elif field.kind == "enum":
        allowed = frozenset(enums[type_name])

        def check(v: Any) -> Any:
            if type(v) is str and v in allowed:
                return v
            raise _fail(entity, name, f"one of {sorted(allowed)}", v)
    else:
        raise AssertionError(f"unknown scalar {type_name}")
    return check


def _ref_check(entity: str, field: FieldSpec) -> Check:
    def check(v: Any) -> Any:
        if type(v) is str:
            return v
        if isinstance(v, Entity) and type(v)._entity_name == field.type_name:
            return v.id  # type: ignore[attr-defined]
        raise _fail(entity, field.name, f"the id (str) of a {field.type_name}", v)

    return check


def field_check(entity: str, field: FieldSpec, enums: dict) -> Check:
    """The function that checks and normalises one field's value (None handled here too)."""
    if field.kind == "ref":
        item = _ref_check(entity, field)
    else:
        item = _scalar_check(entity, field, field.type_name, enums)
    if field.is_list:
        inner = item

        def item(v: Any) -> Any:
            if not isinstance(v, list | tuple):
                raise _fail(entity, field.name, f"a list of {field.type_name}", v)
            return [inner(x) for x in v]

    if field.required:
        checked = item

        def required(v: Any) -> Any:
            if v is None:
                raise EntityError(
                    f"{entity}.{field.name} is required (declared with '!') but is None",
                    hint=f"give {entity}.{field.name} a value, or drop the '!' in the schema",
                )
            return checked(v)

        return required

    checked_optional = item

    def optional(v: Any) -> Any:
        return None if v is None else checked_optional(v)

    return optional


class Entity:
    """Base class of the generated entity classes. Build one with keyword arguments."""

    __slots__ = ()
    _entity_name: str = ""
    _attributes: tuple[str, ...] = ()
    _columns: tuple[str, ...] = ()
    _checks: tuple[Check, ...] = ()
    _defaults: dict[str, Any] = {}

    def __init__(self, **values: Any) -> None:
        cls = type(self)
        for attr in cls._attributes:
            object.__setattr__(self, attr, values.pop(attr, None))
        if values:
            unknown = ", ".join(sorted(values))
            raise EntityError(
                f"{cls._entity_name} has no field {unknown}",
                hint=f"its fields are: {', '.join(cls._attributes)}",
            )

    def to_row(self) -> tuple:
        """Check every field and return the stored row."""
        attrs = self._attributes
        checks = self._checks
        return tuple([checks[i](getattr(self, attrs[i])) for i in range(len(attrs))])

    @classmethod
    def from_row(cls, row: tuple) -> Entity:
        obj = object.__new__(cls)
        for attr, value in zip(cls._attributes, row, strict=True):
            object.__setattr__(obj, attr, value)
        return obj

    def to_dict(self) -> dict[str, Any]:
        """Field values by schema name."""
        return {c: getattr(self, a) for c, a in zip(self._columns, self._attributes, strict=True)}

    def copy(self, **changes: Any) -> Entity:
        values = {a: getattr(self, a) for a in self._attributes}
        values.update(changes)
        return type(self)(**values)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, a) == getattr(other, a) for a in self._attributes)

    def __repr__(self) -> str:
        body = ", ".join(f"{a}={getattr(self, a)!r}" for a in self._attributes)
        return f"{self._entity_name}({body})"

    __hash__ = None  # type: ignore[assignment]


# Types whose common case a generated to_row accepts inline, without calling the field's check:
# the exact Python type, and for Int the 64-bit range.
_INLINE = {"ID": "str", "String": "str", "BigInt": "int", "Boolean": "bool"}


def _generate_row_methods(
    spec: EntitySpec, attributes: tuple[str, ...]
) -> tuple[Callable[[Any], tuple], Callable[[type, tuple], Any], Callable[..., None]]:
    """Straight-line ``to_row`` / ``from_row`` for one entity: they run for every ``set`` and
    ``get``, and unrolled code is several times faster than a loop over fields."""
    lines = ["def to_row(self):"]
    for i, (f, attr) in enumerate(zip(spec.stored_fields, attributes, strict=True)):
        lines.append(f"    v{i} = self.{attr}")
        inline = _INLINE.get(f.type_name) if f.kind == "scalar" and not f.is_list else None
        if inline and f.required:
            lines.append(f"    if type(v{i}) is not {inline}: v{i} = check{i}(v{i})")
        elif f.type_name == "Bytes" and f.kind == "scalar" and not f.is_list and f.required:
            lines.append(
                f"    if type(v{i}) is not str or v{i} not in known_hex: v{i} = check{i}(v{i})"
            )
        elif f.type_name == "Int" and f.kind == "scalar" and not f.is_list and f.required:
            lines.append(
                f"    if type(v{i}) is not int or not {INT64_MIN} <= v{i} <= {INT64_MAX}: "
                f"v{i} = check{i}(v{i})"
            )
        else:
            lines.append(f"    v{i} = check{i}(v{i})")
    lines.append(f"    return ({', '.join(f'v{i}' for i in range(len(attributes)))},)")
    params = ", ".join(f"{a}=None" for a in attributes)
    lines.append(f"def __init__(self, *, {params}, **unknown):")
    lines.append("    if unknown: refuse(self, unknown)")
    for attr in attributes:
        lines.append(f"    self.{attr} = {attr}")
    lines.append("def from_row(cls, row):")
    lines.append("    obj = new(cls)")
    lines.append(f"    {', '.join(f'obj.{a}' for a in attributes)}, = row")
    lines.append("    return obj")
    namespace: dict[str, Any] = {
        "new": object.__new__,
        "refuse": _refuse_unknown,
        "known_hex": _KNOWN_HEX,
    }
    code = "\n".join(lines)
    exec(compile(code, f"<evmflow entity {spec.name}>", "exec"), namespace)
    return namespace["to_row"], namespace["from_row"], namespace["__init__"]


def _refuse_unknown(entity: Entity, unknown: dict[str, Any]) -> None:
    cls = type(entity)
    raise EntityError(
        f"{cls._entity_name} has no field {', '.join(sorted(unknown))}",
        hint=f"its fields are: {', '.join(cls._attributes)}",
    )


def make_entity_class(spec: EntitySpec, enums: dict[str, list[str]]) -> type[Entity]:
    stored = spec.stored_fields
    attributes = tuple(attribute_name(f.name) for f in stored)
    checks = tuple(field_check(spec.name, f, enums) for f in stored)
    to_row, from_row, init = _generate_row_methods(spec, attributes)
    to_row.__globals__.update({f"check{i}": c for i, c in enumerate(checks)})
    namespace = {
        "__slots__": attributes,
        "_entity_name": spec.name,
        "_attributes": attributes,
        "_columns": tuple(f.name for f in stored),
        "_checks": checks,
        "to_row": to_row,
        "from_row": classmethod(from_row),
        "__init__": init,
        "__module__": "evmflow.entities",
        "__qualname__": spec.name,
    }
    return type(spec.name, (Entity,), namespace)


def make_entity_classes(schema: SchemaSpec) -> dict[str, type[Entity]]:
    return {name: make_entity_class(spec, schema.enums) for name, spec in schema.entities.items()}


# The classes of the project being run, so handler modules can write
# ``from evmflow.entities import Account``. Set by the project loader before handlers import.
_current: dict[str, type[Entity]] = {}


def _install(classes: dict[str, type[Entity]]) -> None:
    _current.clear()
    _current.update(classes)


def __getattr__(name: str) -> type[Entity]:
    try:
        return _current[name]
    except KeyError:
        known = ", ".join(sorted(_current)) or "none (no project is loaded)"
        raise AttributeError(
            f"schema.graphql defines no entity {name!r}; entities: {known}"
        ) from None
