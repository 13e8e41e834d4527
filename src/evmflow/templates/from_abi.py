"""A project from an ABI file: ``evmflow init DIR --from-abi FILE --address 0x.. --event X``.

It writes evmflow.yaml, a schema with one entity per chosen event (the event's parameters as
fields, plus where the log was) and handlers that store every event as one entity. The result
runs as written; it is a starting point to edit, not a finished indexer.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from ..abi import AbiParam, EventAbi, load_abi_file
from ..decode import _PARAMS_RESERVED, _unique_names
from ..entities import attribute_name
from ..errors import UserError

# Fields every generated entity has, besides the event's parameters.
LOG_FIELDS = {
    "id": "ID!",
    "blockNumber": "Int!",
    "blockTimestamp": "Timestamp!",
    "transactionHash": "Bytes!",
    "logIndex": "Int!",
    "contract": "Bytes!",
}
_INT_TYPE = re.compile(r"(u?)int(\d*)")
_RESERVED_ENTITY_NAMES = {"Query", "Mutation", "Subscription"}
_SCALAR_LISTS = {"Int", "BigInt", "Bytes", "String", "Boolean", "BigDecimal"}


def graphql_type(param: AbiParam) -> str:
    """The schema type that holds a decoded parameter, without the ``!``.

    Integers that fit a signed 64-bit column are ``Int``, wider ones ``BigInt``; addresses,
    ``bytes``, ``bytesN`` and the hashes of indexed dynamic values are ``Bytes``; fixed point is
    ``BigDecimal``; arrays of those are lists; tuples and nested arrays are ``Json``.
    """
    if param.indexed and (
        param.type in ("string", "bytes")
        or param.type.startswith("tuple")
        or param.type.endswith("]")
    ):
        return "Bytes"  # the chain keeps only the keccak hash of an indexed dynamic value
    if param.type.endswith("]"):
        inner = AbiParam(param.name, param.type[: param.type.rindex("[")], False, param.components)
        item = graphql_type(inner)
        return f"[{item}!]" if item in _SCALAR_LISTS else "Json"
    match = _INT_TYPE.fullmatch(param.type)
    if match:
        bits = int(match.group(2) or 256)
        fits = bits < 64 if match.group(1) else bits <= 64
        return "Int" if fits else "BigInt"
    if param.type in ("address", "bytes", "function") or param.type.startswith("bytes"):
        return "Bytes"
    if param.type == "bool":
        return "Boolean"
    if param.type == "string":
        return "String"
    if param.type.startswith(("fixed", "ufixed")):
        return "BigDecimal"
    return "Json"  # tuple


def _field_names(event: EventAbi) -> list[str]:
    """Schema field names of an event's parameters: no clash with LOG_FIELDS or each other."""
    names: list[str] = []
    for position, param in enumerate(event.inputs):
        name = re.sub(r"\W", "_", param.name).lstrip("_") or f"arg{position}"
        if name[0].isdigit():
            name = "p" + name
        while name in LOG_FIELDS or name in names:
            name += "Param"
        names.append(name)
    return names


def _identifier(text: str) -> str:
    name = re.sub(r"\W", "_", text.split(".")[0]).strip("_") or "Contract"
    return "C" + name if name[0].isdigit() else name


def _choose_events(abi_events: list[EventAbi], wanted: list[str] | None, abi: Path) -> list:
    by_name: dict[str, list[EventAbi]] = {}
    for event in abi_events:
        by_name.setdefault(event.name, []).append(event)
    if not abi_events:
        raise UserError("the ABI has no events to index", file=abi, hint="give another ABI")
    names = wanted or list(by_name)
    chosen = []
    for name in names:
        found = by_name.get(name)
        if found is None:
            raise UserError(
                f"the ABI has no event {name!r}",
                file=abi,
                hint=f"its events: {', '.join(sorted(by_name))}",
            )
        if len(found) > 1:
            # Limitation: overloaded events (one name, several signatures) are refused; write
            # the project by hand and list each one by its signature in evmflow.yaml.
            raise UserError(
                f"the ABI has {len(found)} events named {name!r}",
                file=abi,
                hint="leave that event out, or list it by signature in a hand-written project",
            )
        chosen.append(found[0])
    return chosen


def _entity_names(contract: str, events: list[EventAbi]) -> dict[str, str]:
    out = {}
    for event in events:
        name = event.name
        if name == contract or name in _RESERVED_ENTITY_NAMES:
            name = f"{contract}{name}"
        out[event.name] = name[0].upper() + name[1:]
    return out


def render_schema(contract: str, events: list[EventAbi]) -> str:
    entities = _entity_names(contract, events)
    blocks = []
    for event in events:
        lines = [f'"{contract}.{event.signature}, one entity per log."']
        lines.append(f"type {entities[event.name]} @entity {{")
        lines.append('  id: ID!                   # "<chain>-<block>-<log index>"')
        for param, name in zip(event.inputs, _field_names(event), strict=True):
            index = " @index" if param.indexed and graphql_type(param) == "Bytes" else ""
            lines.append(f"  {name}: {graphql_type(param)}!{index}")
        lines += [f"  {name}: {kind}" for name, kind in LOG_FIELDS.items() if name != "id"]
        lines.append("}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def _needs_json(event: EventAbi) -> bool:
    return any(graphql_type(p) == "Json" for p in event.inputs)


_JSON_HELPER = '''

def plain(value):
    """A decoded tuple or nested array as a JSON value; big integers become strings."""
    if isinstance(value, tuple) and hasattr(value, "to_dict"):
        return {k: plain(v) for k, v in value.to_dict().items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**53:
        return str(value)
    if isinstance(value, Decimal):
        return str(value)
    return value
'''


def render_handlers(contract: str, events: list[EventAbi]) -> str:
    entities = _entity_names(contract, events)
    json_needed = any(_needs_json(e) for e in events)
    lines = []
    if json_needed:
        lines.append("from decimal import Decimal\n")
    lines.append(f"from evmflow.contracts import {contract}")
    lines.append(f"from evmflow.entities import {', '.join(sorted(set(entities.values())))}")
    if json_needed:
        lines.append(_JSON_HELPER.rstrip("\n"))
    for event in events:
        entity = entities[event.name]
        function = "on_" + re.sub(r"(?<!^)(?=[A-Z])", "_", event.name).lower()
        lines += [
            "",
            "",
            f"@{contract}.{event.name}.handler",
            f"async def {function}(event, context):",
            "    params = event.params",
            f"    context.{entity}.set(",
            f"        {entity}(",
            '            id=f"{event.chain_id}-{event.block_number}-{event.log_index}",',
        ]
        param_attrs = _unique_names([p.name for p in event.inputs], _PARAMS_RESERVED)
        for param, field, attr in zip(event.inputs, _field_names(event), param_attrs, strict=True):
            value = f"params.{attr}"
            if graphql_type(param) == "Json":
                value = f"plain({value})"
            lines.append(f"            {attribute_name(field)}={value},")
        lines += [
            "            blockNumber=event.block_number,",
            "            blockTimestamp=event.block_timestamp,",
            "            transactionHash=event.transaction_hash,",
            "            logIndex=event.log_index,",
            "            contract=event.address,",
            "        )",
            "    )",
        ]
    return "\n".join(lines) + "\n"


def render_config(
    name: str,
    contract: str,
    abi_name: str,
    address: str | None,
    events: list[EventAbi],
    chain_id: int,
    start_block: int,
    end_block: int | None,
    source: str,
) -> str:
    lines = [
        f"# Generated by 'evmflow init --from-abi {abi_name}'. Edit freely.",
        f"name: {name}",
        "schema: schema.graphql",
        "handlers: handlers.py",
        "",
        "chains:",
        f"  - id: {chain_id}",
        f"    start_block: {start_block}",
    ]
    if end_block is not None:
        lines.append(f"    end_block: {end_block}")
    else:
        lines.append("    # end_block: 20000000   # leave out to follow the chain's head")
    lines += [f"    {line}" for line in source.splitlines()]
    lines += ["", "contracts:", f"  - name: {contract}", f"    abi: abis/{abi_name}"]
    if address:
        lines.append(f"    address: {address.lower()}")
    else:
        lines.append("    # No address: these events from every contract that emits them.")
    lines.append("    events:")
    lines += [f"      - {e.name}" for e in events]
    return "\n".join(lines) + "\n"


def write_from_abi(
    directory: Path,
    abi_file: Path,
    *,
    address: str | None = None,
    events: list[str] | None = None,
    contract: str | None = None,
    chain_id: int = 1,
    start_block: int = 0,
    end_block: int | None = None,
    rpc_url: str | None = None,
    archive: Path | None = None,
) -> list[Path]:
    """Write a project that stores every chosen event of ``abi_file`` (default: all of them).

    The source is a copy of ``archive`` (the path prefix of NAME.logs.jsonl[.gz] and
    NAME.blocks.jsonl[.gz]) when given, else ``rpc_url`` (default ``${RPC_URL}``, read from the
    environment when the project runs).
    """
    directory = Path(directory)
    abi_file = Path(abi_file)
    if directory.exists() and any(directory.iterdir()):
        raise UserError(
            f"{directory} is not empty", hint="give a new or empty directory to 'evmflow init'"
        )
    if address is not None and not re.fullmatch(r"0x[0-9a-fA-F]{40}", address):
        raise UserError(
            f"{address!r} is not an address", hint="give a 0x-prefixed 20-byte hex address"
        )
    chosen = _choose_events(load_abi_file(abi_file), events, abi_file)
    contract_name = _identifier(contract or abi_file.name)
    name = re.sub(r"[^A-Za-z0-9_-]", "-", directory.resolve().name) or "evmflow-project"

    archive_files: list[Path] = []
    if archive is not None:
        archive = Path(archive)
        for kind in ("logs", "blocks"):
            found = [
                Path(f"{archive}.{kind}.jsonl{ext}")
                for ext in (".gz", "")
                if Path(f"{archive}.{kind}.jsonl{ext}").exists()
            ]
            if kind == "logs" and not found:
                raise UserError(
                    f"no {archive}.logs.jsonl[.gz]",
                    hint="give the archive's path prefix, without .logs.jsonl",
                )
            archive_files += found[:1]
        source = f"archive:\n  path: data/{archive.name}"
    else:
        url = rpc_url or "${RPC_URL}"
        source = f'rpc:\n  urls: ["{url}"]'

    (directory / "abis").mkdir(parents=True, exist_ok=True)
    abi_target = directory / "abis" / abi_file.name
    data = json.loads(abi_file.read_text())
    abi_target.write_text(json.dumps(data, indent=2) + "\n")
    files = {
        "evmflow.yaml": render_config(
            name,
            contract_name,
            abi_file.name,
            address,
            chosen,
            chain_id,
            start_block,
            end_block,
            source,
        ),
        "schema.graphql": render_schema(contract_name, chosen),
        "handlers.py": render_handlers(contract_name, chosen),
    }
    written = [abi_target]
    for relative, text in files.items():
        (directory / relative).write_text(text)
        written.append(directory / relative)
    for path in archive_files:
        target = directory / "data" / path.name
        target.parent.mkdir(exist_ok=True)
        shutil.copyfile(path, target)
        written.append(target)
    return sorted(written)
