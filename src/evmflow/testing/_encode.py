"""Encoding handler-test parameters into a log's topics and data.

The testing kit does not build ``event.params`` by hand: it encodes the values the test gives
into the topics and data of a log, exactly as a contract would emit them, and decodes that log
with the project's real :class:`~evmflow.decode.EventDecoder`. A handler under test therefore
sees the very objects the indexer would give it (lowercase addresses, ``Decimal`` for fixed
point, tuple classes for structs), and a value that does not fit its ABI type is refused here,
with the parameter's name, instead of surfacing as a puzzling handler failure.
"""

from __future__ import annotations

import reprlib
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from ..abi import EventAbi, keccak256
from ..decode import _AbiType, _parse_type
from ..errors import UserError

_WORD_BYTES = 32


class EventParamError(UserError):
    """A test gave an event parameter a value its ABI type cannot hold."""


def _fail(where: str, t: _AbiType, expected: str, value: Any) -> EventParamError:
    return EventParamError(
        f"{where} ({_type_name(t)}) expects {expected}, "
        f"got {type(value).__name__} {reprlib.repr(value)}",
        hint=f"give {where} a value of that type",
    )


def _type_name(t: _AbiType) -> str:
    if t.kind in ("uint", "int"):
        return f"{t.kind}{t.bits}"
    if t.kind in ("fixed", "ufixed"):
        return f"{t.kind}{t.bits}x{t.frac}"
    if t.kind == "fixedbytes":
        return f"bytes{t.bits}"
    if t.kind == "array":
        assert t.item is not None
        return f"{_type_name(t.item)}[{'' if t.length is None else t.length}]"
    if t.kind == "tuple":
        return "(" + ",".join(_type_name(c) for c in t.components) + ")"
    return t.kind


def _as_bytes(value: Any) -> bytes | None:
    """bytes from ``bytes`` or a ``0x`` hex string; None if it is neither."""
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, str) and value[:2] in ("0x", "0X") and len(value) % 2 == 0:
        try:
            return bytes.fromhex(value[2:])
        except ValueError:
            return None
    return None


def _int_word(value: int) -> bytes:
    return (value % (1 << 256)).to_bytes(_WORD_BYTES, "big")


def _integer(t: _AbiType, value: Any, where: str) -> int:
    if type(value) is not int:
        raise _fail(where, t, "an int", value)
    if t.kind == "uint":
        low, high = 0, (1 << t.bits) - 1
    else:
        low, high = -(1 << (t.bits - 1)), (1 << (t.bits - 1)) - 1
    if not low <= value <= high:
        raise _fail(where, t, f"an int from {low} to {high}", value)
    return value


def _fixed_point(t: _AbiType, value: Any, where: str) -> int:
    try:
        number = Decimal(value) if isinstance(value, int | str | Decimal) else None
    except InvalidOperation:
        number = None
    if number is None or type(value) is bool or not number.is_finite():
        raise _fail(where, t, "a Decimal, int or decimal str", value)
    scaled = number.scaleb(t.frac)
    if scaled != scaled.to_integral_value():
        raise _fail(where, t, f"at most {t.frac} decimal places", value)
    base = _AbiType("uint" if t.kind == "ufixed" else "int", bits=t.bits)
    return _integer(base, int(scaled), where)


def _static_word(t: _AbiType, value: Any, where: str) -> bytes:
    """The 32-byte word of a value type (the types an indexed topic holds as themselves)."""
    kind = t.kind
    if kind in ("uint", "int"):
        return _int_word(_integer(t, value, where))
    if kind in ("fixed", "ufixed"):
        return _int_word(_fixed_point(t, value, where))
    if kind == "bool":
        if type(value) is not bool:
            raise _fail(where, t, "a bool", value)
        return _int_word(int(value))
    if kind == "address":
        raw = _as_bytes(value)
        if raw is None or len(raw) != 20:
            raise _fail(where, t, "a 0x-prefixed 20-byte hex str", value)
        return raw.rjust(_WORD_BYTES, b"\0")
    assert kind == "fixedbytes"
    raw = _as_bytes(value)
    if raw is None or len(raw) != t.bits:
        raise _fail(where, t, f"bytes or a 0x hex str of exactly {t.bits} bytes", value)
    return raw.ljust(_WORD_BYTES, b"\0")


def _items(t: _AbiType, value: Any, where: str) -> list[tuple[_AbiType, Any, str]]:
    """The (type, value, where) of each element of an array or tuple value."""
    if t.kind == "array":
        assert t.item is not None
        if not isinstance(value, list | tuple):
            raise _fail(where, t, "a list", value)
        if t.length is not None and len(value) != t.length:
            raise _fail(where, t, f"a list of exactly {t.length} items", value)
        return [(t.item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    names = list(getattr(t.tuple_class, "_fields", ()))
    if isinstance(value, Mapping):
        if not names or set(value) != set(names):
            raise _fail(where, t, f"a dict with the keys {names}", value)
        value = [value[n] for n in names]
    if not isinstance(value, list | tuple) or len(value) != len(t.components):
        raise _fail(where, t, f"a tuple of {len(t.components)} values", value)
    return [
        (c, v, f"{where}.{names[i] if names else i}")
        for i, (c, v) in enumerate(zip(t.components, value, strict=True))
    ]


def _encode(t: _AbiType, value: Any, where: str) -> bytes:
    """The ABI encoding of one value (for a dynamic type: its tail)."""
    if t.kind in ("bytes", "string"):
        if t.kind == "string":
            if not isinstance(value, str):
                raise _fail(where, t, "a str", value)
            raw = value.encode()
        else:
            found = _as_bytes(value)
            if found is None:
                raise _fail(where, t, "bytes or a 0x hex str", value)
            raw = found
        padded = raw.ljust((len(raw) + 31) // 32 * 32, b"\0")
        return _int_word(len(raw)) + padded
    if t.kind in ("array", "tuple"):
        items = _items(t, value, where)
        body = _encode_sequence(items)
        if t.kind == "array" and t.length is None:
            return _int_word(len(items)) + body
        return body
    return _static_word(t, value, where)


def _encode_sequence(items: list[tuple[_AbiType, Any, str]]) -> bytes:
    """Heads then tails: a dynamic item's head is the offset of its tail in this sequence."""
    head_size = sum(_WORD_BYTES if t.dynamic else t.head_chars // 2 for t, _, _ in items)
    heads, tails = [], []
    offset = head_size
    for t, value, where in items:
        encoded = _encode(t, value, where)
        if t.dynamic:
            heads.append(_int_word(offset))
            tails.append(encoded)
            offset += len(encoded)
        else:
            heads.append(encoded)
    return b"".join(heads + tails)


def _topic(t: _AbiType, value: Any, where: str) -> str:
    if t.value_type:
        return "0x" + _static_word(t, value, where).hex()
    # Limitation: an indexed string, bytes, array or tuple is stored by the chain as a hash
    # only, so the test gives that 32-byte hash (``indexed_topic("text")`` makes it for string
    # and bytes). Hashing arrays and tuples in their packed encoding is not implemented.
    raw = _as_bytes(value)
    if raw is None or len(raw) != _WORD_BYTES:
        raise EventParamError(
            f"{where} is an indexed {_type_name(t)}: the chain keeps only its keccak hash, "
            f"so the handler sees a 32-byte hex str; got {type(value).__name__} {value!r}",
            hint="pass evmflow.testing.indexed_topic(value) for a string or bytes value",
        )
    return "0x" + raw.hex()


def indexed_topic(value: str | bytes) -> str:
    """The topic an indexed ``string`` (a str) or ``bytes`` (bytes) parameter puts on chain."""
    raw = value.encode() if isinstance(value, str) else bytes(value)
    return "0x" + keccak256(raw).hex()


def encode_log(event: EventAbi, values: list[Any], names: list[str]) -> tuple[list[str], str]:
    """The ``(topics, data)`` hex strings of a log of ``event`` carrying ``values``.

    ``names`` are the parameter names used in error messages, in ABI order.
    """
    topics = [] if event.anonymous else [event.topic0]
    unindexed: list[tuple[_AbiType, Any, str]] = []
    for param, value, name in zip(event.inputs, values, names, strict=True):
        where = f"{event.name}.{name}"
        t = _parse_type(param, where)
        if param.indexed:
            topics.append(_topic(t, value, where))
        else:
            unindexed.append((t, value, where))
    return topics, "0x" + _encode_sequence(unindexed).hex()
