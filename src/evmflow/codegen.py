"""Typed stubs of a project, for editors and mypy: ``evmflow codegen [DIR]``.

At run time ``evmflow.entities`` and ``evmflow.contracts`` are filled from the loaded project,
so a type checker sees only ``Entity`` and ``ContractRef`` and cannot check a handler. This
module writes stubs that describe *this* project:

- ``typings/evmflow/entities.pyi``: one class per entity (fields typed by the schema, the
  constructor's keyword arguments), and ``Context``, whose ``context.Account.get(...)`` returns
  ``Account | None``;
- ``typings/evmflow/contracts.pyi``: one class per contract, one nested class per event with
  its ``Params`` and ``Event`` types, so a handler can be declared as
  ``async def on_transfer(event: ERC20.Transfer.Event, context: Context) -> None``.

``typings/`` is where Pyright and Pylance look for stubs by default; mypy needs
``mypy_path = typings``. The stubs shadow the installed package for those two modules (and its
``__init__``) only. A hash of the inputs (evmflow.yaml, schema, ABI files) is kept in
``typings/evmflow/.inputs-hash`` so :func:`refresh_if_stale` rewrites the stubs only when an
input changed.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from .abi import AbiParam
from .config import ProjectConfig, load_config
from .decode import _PARAMS_RESERVED, _unique_names
from .entities import attribute_name
from .schema import EntitySpec, FieldSpec, SchemaSpec, load_schema

FORMAT = "1"  # bump when the generated text changes shape, so old stubs are rewritten
STUB_DIR = Path("typings") / "evmflow"
HASH_FILE = ".inputs-hash"
HEADER = "# Made by 'evmflow codegen' from {what}; run it again rather than editing.\n"

# Schema scalar -> (type read back, types accepted when setting).
_SCALARS = {
    "ID": ("str", "str"),
    "String": ("str", "str"),
    "Bytes": ("str", "str | bytes"),
    "Int": ("int", "int"),
    "BigInt": ("int", "int"),
    "Float": ("float", "float | int"),
    "Boolean": ("bool", "bool"),
    "BigDecimal": ("Decimal", "Decimal | int | str"),
    "Timestamp": ("datetime", "datetime | int | float"),
    "Json": ("Any", "Any"),
}
_INT_TYPE = re.compile(r"u?int\d*")


def inputs_hash(config: ProjectConfig) -> str:
    """A hash of everything the stubs are made from."""
    digest = hashlib.sha256(FORMAT.encode())
    paths = [config.path, config.schema_path, *(c.abi for c in config.contracts)]
    for path in paths:
        digest.update(str(path).encode() + b"\0")
        digest.update(Path(path).read_bytes() + b"\0")
    return digest.hexdigest()[:32]


# -- entities ---------------------------------------------------------------------------------


def _field_types(field: FieldSpec, schema: SchemaSpec) -> tuple[str, str]:
    if field.kind == "ref":
        read, write = "str", f"str | {field.type_name}"
    elif field.kind == "enum":
        values = ", ".join(repr(v) for v in schema.enums[field.type_name])
        read = write = f"Literal[{values}]"
    else:
        read, write = _SCALARS[field.type_name]
    if field.is_list:
        read, write = f"list[{read}]", f"list[{write}] | tuple[{write}, ...]"
    if not field.required:
        read, write = f"{read} | None", f"{write} | None"
    return read, write


def _entity_class(spec: EntitySpec, schema: SchemaSpec) -> list[str]:
    lines = [f"class {spec.name}(Entity):"]
    arguments = []
    for field in spec.stored_fields:
        attr = attribute_name(field.name)
        read, write = _field_types(field, schema)
        if read == write:
            lines.append(f"    {attr}: {read}")
        else:
            lines += [
                "    @property",
                f"    def {attr}(self) -> {read}: ...",
                f"    @{attr}.setter",
                f"    def {attr}(self, value: {write}) -> None: ...",
            ]
        default = "" if field.required else " = None"
        arguments.append(f"        {attr}: {write}{default},")
    lines += ["    def __init__(", "        self,", "        *,", *arguments, "    ) -> None: ..."]
    return lines


def _table_class(name: str) -> list[str]:
    return [
        f"class _{name}Entities:",
        f'    """context.{name}: reads and writes of {name} entities."""',
        f"    def get(self, entity_id: str) -> Awaitable[{name} | None]: ...",
        f"    def get_or_throw(self, entity_id: str) -> Awaitable[{name}]: ...",
        f"    def get_where(self, **conditions: Any) -> Awaitable[list[{name}]]: ...",
        f"    def set(self, entity: {name}) -> None: ...",
        "    def delete(self, entity_id: str) -> None: ...",
    ]


def context_class_name(schema: SchemaSpec) -> str:
    """``Context``, unless the schema has an entity of that name."""
    name = "Context"
    while name in schema.entities:
        name = "Handler" + name
    return name


def render_entities(schema: SchemaSpec) -> str:
    context = context_class_name(schema)
    blocks = [
        HEADER.format(what="schema.graphql")
        + "import logging\n"
        + "from collections.abc import Awaitable\n"
        + "from datetime import datetime\n"
        + "from decimal import Decimal\n"
        + "from typing import Any, Literal, Self\n",
        "\n".join(
            [
                "class Entity:",
                "    def to_row(self) -> tuple[Any, ...]: ...",
                "    @classmethod",
                "    def from_row(cls, row: tuple[Any, ...]) -> Self: ...",
                "    def to_dict(self) -> dict[str, Any]: ...",
                "    def copy(self, **changes: Any) -> Self: ...",
            ]
        ),
    ]
    for name, spec in schema.entities.items():
        blocks.append("\n".join(_entity_class(spec, schema)))
        blocks.append("\n".join(_table_class(name)))
    context_lines = [
        f"class {context}:",
        '    """The second argument of every handler."""',
        "    is_preload: bool",
        "    log: logging.Logger",
    ]
    context_lines += [f"    {name}: _{name}Entities" for name in schema.entities]
    blocks.append("\n".join(context_lines))
    return "\n\n".join(blocks) + "\n"


# -- contracts --------------------------------------------------------------------------------


def python_type(param: AbiParam) -> str:
    """The Python type of a decoded ABI parameter, as the decoder produces it."""
    if param.indexed and not _is_value_type(param.type):
        return "str"  # the topic: the keccak hash of the value
    if param.type.endswith("]"):
        item = AbiParam(param.name, param.type[: param.type.rindex("[")], False, param.components)
        return f"list[{python_type(item)}]"
    if _INT_TYPE.fullmatch(param.type):
        return "int"
    if param.type == "bool":
        return "bool"
    if param.type.startswith(("fixed", "ufixed")):
        return "Decimal"
    if param.type.startswith("tuple"):
        # Limitation: a struct is typed as a plain tuple; its components' names and types are
        # not described, so ``params.order.amount`` is not checked (it is Any).
        return "Any"
    return "str"  # address, bytes, bytesN, string, function


def _is_value_type(abi_type: str) -> bool:
    return not (abi_type in ("string", "bytes") or abi_type.startswith("tuple") or "[" in abi_type)


def render_contracts(config: ProjectConfig, context: str) -> str:
    blocks = [
        HEADER.format(what="evmflow.yaml and the ABI files")
        + "from collections.abc import Awaitable, Callable\n"
        + "from decimal import Decimal\n"
        + "from typing import Any\n\n"
        + f"from evmflow.entities import {context}\n",
        "\n".join(
            [
                "class BaseParams:",
                "    def __getitem__(self, key: str) -> Any: ...",
                "    def to_dict(self) -> dict[str, Any]: ...",
                "",
                "class BaseEvent:",
                "    chain_id: int",
                "    contract: str",
                "    name: str",
                "    address: str",
                "    block_number: int",
                "    block_hash: str",
                "    block_timestamp: int",
                "    transaction_hash: str",
                "    transaction_index: int",
                "    log_index: int",
                "    params: BaseParams",
            ]
        ),
    ]
    for contract in config.contracts:
        lines = [f"class {contract.name}:"]
        for event in contract.event_abis:
            qualified = f"{contract.name}.{event.name}"
            names = _unique_names([p.name for p in event.inputs], _PARAMS_RESERVED)
            handler = f"Callable[[{qualified}.Event, {context}], Awaitable[None]]"
            lines += [f"    class {event.name}:", "        class Params(BaseParams):"]
            fields = [
                f"            {n}: {python_type(p)}"
                for n, p in zip(names, event.inputs, strict=True)
            ]
            lines += fields or ["            pass"]
            lines += [
                "        class Event(BaseEvent):",
                f"            params: {qualified}.Params",
                "        @staticmethod",
                "        def handler(",
                f"            fn: {handler},",
                f"        ) -> {handler}: ...",
            ]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


# -- writing ----------------------------------------------------------------------------------


def generate(project: str | Path | ProjectConfig) -> list[Path]:
    """Write the stubs of a project into ``<project>/typings/evmflow/``; returns the files."""
    config = project if isinstance(project, ProjectConfig) else load_config(project)
    schema = load_schema(config.schema_path)
    target = config.root / STUB_DIR
    target.mkdir(parents=True, exist_ok=True)
    files = {
        "__init__.pyi": HEADER.format(what="evmflow's own package")
        + "from typing import Any\n\n__version__: str\n\n"
        + "def __getattr__(name: str) -> Any: ...\n",
        "entities.pyi": render_entities(schema),
        "contracts.pyi": render_contracts(config, context_class_name(schema)),
    }
    written = []
    for name, text in files.items():
        (target / name).write_text(text)
        written.append(target / name)
    (target / HASH_FILE).write_text(inputs_hash(config) + "\n")
    return written


def is_stale(config: ProjectConfig) -> bool:
    """True when stubs exist and were made from other inputs than the project's current ones."""
    stored = config.root / STUB_DIR / HASH_FILE
    if not stored.exists():
        return False
    return stored.read_text().strip() != inputs_hash(config)


def refresh_if_stale(config: ProjectConfig) -> list[Path]:
    """Regenerate the stubs of a project that has them, if an input changed since.

    A project without ``typings/evmflow`` is left alone: stubs appear only once the user ran
    ``evmflow codegen`` (or ``evmflow init`` wrote them).
    """
    if not is_stale(config):
        return []
    return generate(config)
