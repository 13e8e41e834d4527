"""Event ABIs: reading ABI files, canonical signatures and topic hashes.

Decoding logs lives in :mod:`evmflow.decode`; this module only describes events.
"""

from __future__ import annotations

import json
import re
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
            return f"({inner}){self.type[len('tuple') :]}"
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
    type_name = str(item["type"])
    base = type_name.split("[", 1)[0]
    if base in _TYPE_ALIASES:  # topic0 hashes the canonical spelling
        type_name = _TYPE_ALIASES[base] + type_name[len(base) :]
        base = _TYPE_ALIASES[base]
    if not (_is_elementary_type(base) or base == "tuple") or not re.fullmatch(
        r"(\[\d*\])*", type_name[len(base) :]
    ):
        named = f" ({item['name']})" if item.get("name") else ""
        raise AbiError(
            f"{where}{named}: type {type_name!r} is not an ABI type",
            file=file,
            hint="use canonical ABI types such as address, uint256, bytes32, string, tuple or "
            "uint256[]",
        )
    return AbiParam(
        name=str(item.get("name") or ""),
        type=type_name,
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
    try:
        return events_from_abi(abi, path)
    except AbiError as exc:
        if exc.line is not None or "is not an ABI type" not in exc.message:
            raise
        # Point at the line that spells the bad type.
        bad = exc.message.rsplit("type ", 1)[1].split(" is not", 1)[0].strip("'\"")
        found = text.find(json.dumps(bad))
        line = text.count("\n", 0, found) + 1 if found >= 0 else None
        raise AbiError(exc.message, file=path, line=line, hint=exc.hint) from None


# Event signatures written by hand (in evmflow.yaml) are parsed by a small recursive-descent
# reader: `Name(type [indexed] [name], ...)`, with tuples as `(t1,t2)` or `tuple(t1,t2)` and
# array suffixes. Types are normalised to their canonical spelling (`uint` -> `uint256`) so the
# result compares equal, by `EventAbi.signature`, to the event read from an ABI file.

_SIGNATURE_HINT = "write it like Transfer(address indexed from, address indexed to, uint256 value)"
_TYPE_ALIASES = {
    "uint": "uint256",
    "int": "int256",
    "fixed": "fixed128x18",
    "ufixed": "ufixed128x18",
}


def _is_elementary_type(name: str) -> bool:
    if name in ("address", "bool", "string", "bytes", "function"):
        return True
    for prefix in ("uint", "int"):
        if name.startswith(prefix) and name[len(prefix) :].isdigit():
            bits = int(name[len(prefix) :])
            return 8 <= bits <= 256 and bits % 8 == 0
    if name.startswith("bytes") and name[5:].isdigit():
        return 1 <= int(name[5:]) <= 32
    for prefix in ("ufixed", "fixed"):
        if name.startswith(prefix):
            m, sep, n = name[len(prefix) :].partition("x")
            if sep and m.isdigit() and n.isdigit():
                return 8 <= int(m) <= 256 and int(m) % 8 == 0 and int(n) <= 80
    return False


class _SignatureReader:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, message: str) -> AbiError:
        return AbiError(
            f"cannot read event signature {self.text!r}: {message} at character {self.pos + 1}",
            hint=_SIGNATURE_HINT,
        )

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def peek(self) -> str:
        self.skip_space()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def expect(self, char: str) -> None:
        if self.peek() != char:
            found = repr(self.peek()) if self.peek() else "the end"
            raise self.fail(f"expected {char!r}, found {found}")
        self.pos += 1

    def word(self) -> str:
        self.skip_space()
        start = self.pos
        while self.pos < len(self.text) and (
            self.text[self.pos].isalnum() or self.text[self.pos] in "_$"
        ):
            self.pos += 1
        return self.text[start : self.pos]

    def array_suffix(self) -> str:
        suffix = ""
        while self.peek() == "[":
            self.pos += 1
            size = self.word()
            if size and not size.isdigit():
                raise self.fail(f"array size {size!r} is not a number")
            self.expect("]")
            suffix += f"[{size}]"
        return suffix

    def param_type(self) -> tuple[str, tuple[AbiParam, ...]]:
        """Read a type; returns the ABI `type` string and the tuple components."""
        start = self.pos
        name = "" if self.peek() == "(" else self.word()
        if name == "tuple" or name == "":
            if self.peek() != "(":
                raise self.fail("expected a type")
            components = self.param_list(allow_indexed=False)
            return "tuple" + self.array_suffix(), components
        name = _TYPE_ALIASES.get(name, name)
        if not _is_elementary_type(name):
            self.pos = start
            raise self.fail(f"unknown type {name!r}")
        return name + self.array_suffix(), ()

    def param_list(self, *, allow_indexed: bool) -> tuple[AbiParam, ...]:
        self.expect("(")
        params: list[AbiParam] = []
        if self.peek() == ")":
            self.pos += 1
            return ()
        while True:
            type_, components = self.param_type()
            indexed = False
            name = self.word()
            if name == "indexed":
                if not allow_indexed:
                    raise self.fail("'indexed' is only allowed on event inputs")
                indexed = True
                name = self.word()
            params.append(AbiParam(name=name, type=type_, indexed=indexed, components=components))
            if self.peek() == ",":
                self.pos += 1
                continue
            self.expect(")")
            return tuple(params)


def parse_event_signature(text: str) -> EventAbi:
    """Read an event written by hand, e.g. ``Approval(address indexed owner, uint256 value)``.

    Parameter names and ``indexed`` are optional; a leading ``event`` and a trailing
    ``anonymous`` or ``;`` are accepted, as in Solidity source.
    """
    reader = _SignatureReader(text)
    name = reader.word()
    if name == "event":
        name = reader.word()
    if not name or not (name[0].isalpha() or name[0] in "_$"):
        raise reader.fail("expected the event name")
    inputs = reader.param_list(allow_indexed=True)
    anonymous = False
    if reader.word() == "anonymous":
        anonymous = True
    if reader.peek() == ";":
        reader.pos += 1
    if reader.peek():
        raise reader.fail(f"unexpected {reader.peek()!r}")
    return EventAbi(name=name, inputs=inputs, anonymous=anonymous)
