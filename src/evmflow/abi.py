"""Event ABIs: reading ABI files, canonical signatures and topic hashes.

Decoding logs lives in :mod:`evmflow.decode`; this module only describes events.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from Crypto.Hash import keccak

from .errors import AbiError


def keccak256(data: bytes) -> bytes:
    return keccak.new(digest_bits=256, data=data).digest()


@dataclass(frozen=True, slots=True)
class AbiParam:
    """One event input. ``type`` is the canonical ABI type (``uint256``, ``tuple[]``, ...)."""

    name: str
    type: str
    indexed: bool = False
    components: tuple[AbiParam, ...] = ()

    @property
    def canonical_type(self) -> str:
        """The type as it appears in a signature: tuples spelled out as ``(t1,t2)``."""
        if self.type.startswith("tuple"):
            inner = ",".join(c.canonical_type for c in self.components)
            return f"({inner}){self.type[len('tuple'):]}"
        return self.type


@dataclass(frozen=True, slots=True)
class EventAbi:
    name: str
    inputs: tuple[AbiParam, ...]
    anonymous: bool = False
    signature: str = field(init=False)
    topic0: str = field(init=False)

    def __post_init__(self) -> None:
        signature = f"{self.name}({','.join(p.canonical_type for p in self.inputs)})"
        object.__setattr__(self, "signature", signature)
        object.__setattr__(self, "topic0", "0x" + keccak256(signature.encode()).hex())

    @property
    def indexed_count(self) -> int:
        return sum(1 for p in self.inputs if p.indexed)


def _param_from_json(item: dict, where: str, file: Path | None) -> AbiParam:
    if not isinstance(item, dict) or "type" not in item:
        raise AbiError(f"{where} has no 'type'", file=file, hint="each input needs a 'type' key")
    components = tuple(
        _param_from_json(c, f"{where}.components[{i}]", file)
        for i, c in enumerate(item.get("components") or ())
    )
    return AbiParam(
        name=str(item.get("name") or ""),
        type=str(item["type"]),
        indexed=bool(item.get("indexed", False)),
        components=components,
    )


def events_from_abi(abi: list, file: Path | None = None) -> list[EventAbi]:
    """The events of an ABI given as its JSON list (or a dict with an ``abi`` key)."""
    if isinstance(abi, dict) and "abi" in abi:
        abi = abi["abi"]
    if not isinstance(abi, list):
        raise AbiError(
            "an ABI must be a JSON list of entries",
            file=file,
            hint="use the 'abi' array from your compiler output or block explorer",
        )
    events = []
    for i, entry in enumerate(abi):
        if not isinstance(entry, dict) or entry.get("type") != "event":
            continue
        name = entry.get("name")
        if not name:
            raise AbiError(f"entry {i} is an event without a name", file=file)
        inputs = tuple(
            _param_from_json(p, f"event {name} input {j}", file)
            for j, p in enumerate(entry.get("inputs") or ())
        )
        events.append(EventAbi(name=name, inputs=inputs, anonymous=bool(entry.get("anonymous"))))
    return events


def load_abi_file(path: str | Path) -> list[EventAbi]:
    """Read an ABI JSON file and return its events."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise AbiError("ABI file not found", file=path, hint="check the 'abi' path") from None
    try:
        abi = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AbiError(
            f"not valid JSON: {exc.msg}", file=path, line=exc.lineno, hint="fix the JSON syntax"
        ) from None
    return events_from_abi(abi, path)
