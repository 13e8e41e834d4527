"""schema.graphql: the entities a project stores.

Parsing is done with graphql-core; this module turns its document into the plain description
below, which the rest of evmflow (tables, entity classes, the API) is built from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

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
    raise NotImplementedError
