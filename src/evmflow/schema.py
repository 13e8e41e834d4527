"""schema.graphql: the entities a project stores.

Parsing is done with graphql-core; this module turns its document into the plain description
below, which the rest of evmflow (tables, entity classes, the API) is built from.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import graphql as gql

from .errors import SchemaError

SCALARS = (
    "ID",
    "String",
    "Int",
    "Float",
    "Boolean",
    "BigInt",
    "BigDecimal",
    "Bytes",
    "Timestamp",
    "Json",
)


@dataclass(slots=True)
class FieldSpec:
    """One field of an entity.

    ``kind`` is ``scalar`` (``type_name`` is one of SCALARS), ``enum`` (an enum's name),
    ``ref`` (another entity's name; the column stores its id) or ``derived`` (a reverse
    reference from ``@derivedFrom(field: ...)``: no column).
    """

    name: str
    kind: str
    type_name: str
    required: bool
    is_list: bool = False
    indexed: bool = False
    derived_from: str | None = None
    line: int | None = None


@dataclass(slots=True)
class EntitySpec:
    name: str
    fields: list[FieldSpec]
    line: int | None = None

    @property
    def stored_fields(self) -> list[FieldSpec]:
        """Fields that have a column, ``id`` first."""
        return [f for f in self.fields if f.kind != "derived"]

    def field(self, name: str) -> FieldSpec | None:
        for f in self.fields:
            if f.name == name:
                return f
        return None


@dataclass(slots=True)
class SchemaSpec:
    entities: dict[str, EntitySpec] = field(default_factory=dict)
    enums: dict[str, list[str]] = field(default_factory=dict)
    source: str = ""


def load_schema(path: str | Path) -> SchemaSpec:
    """Read and check a schema.graphql file."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SchemaError(
            "schema file not found", file=path, hint="create it or set 'schema' in evmflow.yaml"
        ) from None
    return parse_schema(text, path)


def parse_schema(text: str, path: str | Path | None = None) -> SchemaSpec:
    """Check a schema.graphql text and describe its entities and enums.

    Rules beyond GraphQL's own syntax:

    - every ``type`` is an entity (``@entity`` may be written, and is then optional);
    - an entity needs ``id: ID!``, ``id: String!`` or ``id: Bytes!``; ``id`` becomes the first
      field whatever its place in the text;
    - field types are the built-in scalars (SCALARS, never declared by the user), enums,
      other entities (a reference: the column stores the target's id), and lists of scalars
      or enums; a list of entities must be ``@derivedFrom(field: "x")`` where ``x`` is a field
      of the target referencing this entity;
    - names starting with ``_`` are reserved for evmflow's own columns and tables;
    - interfaces, unions, input types, custom scalars and directives are not supported.
    """
    return _SchemaReader(text, path).read()


_ID_TYPES = ("ID", "String", "Bytes")
_RESERVED_TYPES = ("Query", "Mutation", "Subscription")
_UNSUPPORTED = {
    "interface_type_definition": "interfaces",
    "union_type_definition": "unions",
    "input_object_type_definition": "input types",
    "schema_definition": "schema definitions",
    "operation_definition": "queries and mutations",
    "fragment_definition": "fragments",
}


def _line(node: Any) -> int | None:
    return node.loc.start_token.line if node.loc is not None else None


class _SchemaReader:
    """Turns a graphql-core document into a SchemaSpec, or raises the first SchemaError."""

    def __init__(self, text: str, path: str | Path | None) -> None:
        self.text = text
        self.path = path
        self.spec = SchemaSpec(source=text)

    def error(self, message: str, node: Any = None, hint: str | None = None) -> SchemaError:
        line = _line(node) if node is not None else None
        return SchemaError(message, file=self.path, line=line, hint=hint)

    def read(self) -> SchemaSpec:
        document = self.parse()
        types = self.collect_type_names(document)

        for definition in document.definitions:
            if isinstance(definition, gql.EnumTypeDefinitionNode):
                self.spec.enums[definition.name.value] = self.enum_values(definition)
        for definition in document.definitions:
            if isinstance(definition, gql.ObjectTypeDefinitionNode):
                entity = self.entity(definition, types)
                self.spec.entities[entity.name] = entity

        if not self.spec.entities:
            raise self.error(
                "the schema defines no entities",
                hint="add one, e.g. type Transfer @entity { id: ID! value: BigInt! }",
            )
        for entity in self.spec.entities.values():
            self.check_derived(entity)
        return self.spec

    def parse(self) -> gql.DocumentNode:
        if not self.text.strip():
            raise self.error(
                "the schema is empty",
                hint="define your entities, e.g. type Transfer @entity { id: ID! value: BigInt! }",
            )
        try:
            return gql.parse(self.text, no_location=False)
        except gql.GraphQLError as exc:
            message = exc.message.removeprefix("Syntax Error: ").rstrip(".")
            line = exc.locations[0].line if exc.locations else None
            raise SchemaError(
                f"GraphQL syntax error: {message}",
                file=self.path,
                line=line,
                hint="fix the syntax; a field is written 'name: Type!' inside 'type X @entity { }'",
            ) from None

    def collect_type_names(self, document: gql.DocumentNode) -> dict[str, str]:
        """Every declared type name mapped to ``entity`` or ``enum``; rejects what we cannot use."""
        types: dict[str, str] = {}
        lines: dict[str, int | None] = {}
        for definition in document.definitions:
            kind = definition.kind
            if kind in _UNSUPPORTED or kind.endswith("_extension"):
                what = _UNSUPPORTED.get(kind, "type extensions ('extend ...')")
                raise self.error(
                    f"{what} are not supported in schema.graphql",
                    definition,
                    hint="declare entities as 'type X @entity { ... }' and enums as 'enum X { }'",
                )
            if isinstance(definition, gql.DirectiveDefinitionNode):
                if definition.name.value not in ("entity", "derivedFrom", "index"):
                    raise self.error(
                        f"custom directive @{definition.name.value} is not supported",
                        definition,
                        hint="evmflow knows @entity, @derivedFrom(field: ...) and @index",
                    )
                continue
            if not isinstance(definition, gql.TypeDefinitionNode):
                raise self.error(
                    "only types and enums belong in schema.graphql",
                    definition,
                    hint="declare entities as 'type X @entity { ... }' and enums as 'enum X { }'",
                )
            name = definition.name.value
            if isinstance(definition, gql.ScalarTypeDefinitionNode):
                if name in SCALARS:
                    continue  # declaring a built-in scalar again is harmless
                raise self.error(
                    f"custom scalar {name} is not supported",
                    definition,
                    hint="use one of the built-in scalars: " + ", ".join(SCALARS),
                )
            if name in SCALARS:
                raise self.error(
                    f"{name} is a built-in scalar and cannot be redefined",
                    definition,
                    hint="rename the type",
                )
            if name in types:
                raise self.error(
                    f"type {name} is defined twice (first on line {lines[name]})",
                    definition,
                    hint="merge the two definitions or rename one",
                )
            if name in _RESERVED_TYPES:
                raise self.error(
                    f"type name {name} is reserved for the GraphQL API",
                    definition,
                    hint="rename the type",
                )
            self.check_name(name, "type", definition)
            types[name] = "enum" if isinstance(definition, gql.EnumTypeDefinitionNode) else "entity"
            lines[name] = _line(definition)
        return types

    def check_name(self, name: str, what: str, node: Any) -> None:
        if name.startswith("_"):
            raise self.error(
                f"{what} name {name!r} starts with '_', which is reserved for evmflow",
                node,
                hint="rename it without the leading underscore",
            )

    def enum_values(self, definition: gql.EnumTypeDefinitionNode) -> list[str]:
        values: list[str] = []
        for value_node in definition.values or ():
            value = value_node.name.value
            if value in values:
                raise self.error(
                    f"enum {definition.name.value} lists {value} twice",
                    value_node,
                    hint="remove one",
                )
            values.append(value)
        if not values:
            raise self.error(
                f"enum {definition.name.value} has no values",
                definition,
                hint="list its values: enum Side { BUY SELL }",
            )
        return values

    def entity(self, definition: gql.ObjectTypeDefinitionNode, types: dict[str, str]) -> EntitySpec:
        name = definition.name.value
        if definition.interfaces:
            raise self.error(
                f"type {name} implements an interface; interfaces are not supported",
                definition,
                hint="declare the fields on the type itself",
            )
        for directive in definition.directives or ():
            if directive.name.value != "entity":
                raise self.error(
                    f"unknown directive @{directive.name.value} on type {name}",
                    directive,
                    hint="a type takes only @entity",
                )
            for argument in directive.arguments or ():
                # `immutable` comes from subgraph schemas; evmflow treats every entity alike.
                if argument.name.value != "immutable":
                    raise self.error(
                        f"@entity has no argument {argument.name.value!r}",
                        argument,
                        hint="write @entity without arguments",
                    )

        fields: list[FieldSpec] = []
        for field_node in definition.fields or ():
            spec = self.field(name, field_node, types)
            if any(f.name == spec.name for f in fields):
                raise self.error(
                    f"field {name}.{spec.name} is defined twice",
                    field_node,
                    hint="remove or rename one",
                )
            fields.append(spec)

        id_field = next((f for f in fields if f.name == "id"), None)
        if id_field is None or not (
            id_field.kind == "scalar"
            and id_field.type_name in _ID_TYPES
            and id_field.required
            and not id_field.is_list
        ):
            raise self.error(
                f"entity {name} needs a field 'id: ID!'"
                + ("" if id_field is None else " (found a different type)"),
                definition if id_field is None else _field_node(definition, "id"),
                hint="add 'id: ID!' (String! and Bytes! work too) as the entity's key",
            )
        fields.remove(id_field)
        return EntitySpec(name=name, fields=[id_field, *fields], line=_line(definition))

    def field(self, entity: str, node: gql.FieldDefinitionNode, types: dict[str, str]) -> FieldSpec:
        name = node.name.value
        self.check_name(name, "field", node)
        if node.arguments:
            raise self.error(
                f"field {entity}.{name} has arguments; fields with arguments are not supported",
                node,
                hint=f"write it as '{name}: Type'",
            )

        required, is_list, type_name = self.unwrap(entity, name, node)
        if type_name in SCALARS:
            kind = "scalar"
        elif type_name in types:
            kind = "ref" if types[type_name] == "entity" else "enum"
        else:
            known = sorted(set(SCALARS) | set(types))
            close = difflib.get_close_matches(type_name, known, n=1)
            raise self.error(
                f"field {entity}.{name} has unknown type {type_name}",
                node.type,
                hint=(f"did you mean {close[0]}? " if close else "")
                + "known types: "
                + ", ".join(known),
            )

        spec = FieldSpec(
            name=name,
            kind=kind,
            type_name=type_name,
            required=required,
            is_list=is_list,
            line=_line(node),
        )
        self.apply_directives(entity, node, spec)
        if spec.kind == "ref" and spec.is_list:
            raise self.error(
                f"field {entity}.{name} is a list of entities without @derivedFrom",
                node,
                hint=f"store the reference on the other side: give {type_name} a field "
                f"'x: {entity}!' and write '{name}: [{type_name}!]! @derivedFrom(field: \"x\")'",
            )
        return spec

    def unwrap(
        self, entity: str, name: str, node: gql.FieldDefinitionNode
    ) -> tuple[bool, bool, str]:
        """(required, is_list, named type) of a field's type."""
        type_node: Any = node.type
        required = isinstance(type_node, gql.NonNullTypeNode)
        if required:
            type_node = type_node.type
        is_list = isinstance(type_node, gql.ListTypeNode)
        if is_list:
            type_node = type_node.type
            if isinstance(type_node, gql.NonNullTypeNode):
                type_node = type_node.type
            if isinstance(type_node, gql.ListTypeNode):
                raise self.error(
                    f"field {entity}.{name} is a list of lists, which is not supported",
                    node.type,
                    hint="use a single list, or Json for nested data",
                )
        return required, is_list, type_node.name.value

    def apply_directives(self, entity: str, node: gql.FieldDefinitionNode, spec: FieldSpec) -> None:
        for directive in node.directives or ():
            directive_name = directive.name.value
            if directive_name == "index":
                if spec.name == "id":
                    continue  # the id is the key: indexed anyway
                spec.indexed = True
            elif directive_name == "derivedFrom":
                spec.derived_from = self.derived_from_argument(entity, spec, directive)
                if spec.kind != "ref" or not spec.is_list:
                    raise self.error(
                        f"@derivedFrom on {entity}.{spec.name} needs a list of entities",
                        directive,
                        hint=f"write '{spec.name}: [Target!]! @derivedFrom(field: \"...\")'",
                    )
                spec.kind = "derived"
            else:
                raise self.error(
                    f"unknown directive @{directive_name} on field {entity}.{spec.name}",
                    directive,
                    hint="fields take @index and @derivedFrom(field: ...)",
                )
        if spec.indexed and spec.kind == "derived":
            raise self.error(
                f"@index on {entity}.{spec.name}, which is derived and has no column",
                node,
                hint="put @index on the referencing field of the other entity",
            )

    def derived_from_argument(self, entity: str, spec: FieldSpec, directive: Any) -> str:
        arguments = {a.name.value: a.value for a in directive.arguments or ()}
        value = arguments.get("field")
        if set(arguments) != {"field"} or not isinstance(value, gql.StringValueNode):
            raise self.error(
                f'@derivedFrom on {entity}.{spec.name} needs one argument field: "name"',
                directive,
                hint='write @derivedFrom(field: "fieldOfTheOtherEntity")',
            )
        return value.value

    def check_derived(self, entity: EntitySpec) -> None:
        for spec in entity.fields:
            if spec.kind != "derived" or spec.derived_from is None:
                continue
            target = self.spec.entities[spec.type_name]
            back = target.field(spec.derived_from)
            if back is None:
                raise SchemaError(
                    f"@derivedFrom on {entity.name}.{spec.name} names {spec.type_name}."
                    f"{spec.derived_from}, which does not exist",
                    file=self.path,
                    line=spec.line,
                    hint=f"fields of {spec.type_name}: " + ", ".join(f.name for f in target.fields),
                )
            if back.kind != "ref" or back.type_name != entity.name or back.is_list:
                raise SchemaError(
                    f"@derivedFrom on {entity.name}.{spec.name} names {spec.type_name}."
                    f"{spec.derived_from}, which does not reference {entity.name}",
                    file=self.path,
                    line=spec.line,
                    hint=f"give {spec.type_name} a field '{spec.derived_from}: {entity.name}!'",
                )


def _field_node(definition: gql.ObjectTypeDefinitionNode, name: str) -> Any:
    return next(f for f in definition.fields or () if f.name.value == name)
