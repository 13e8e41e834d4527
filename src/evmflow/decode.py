"""Decoding event logs into Python values, fast.

Decoding runs once for every log, so it is on the hot path of indexing. A generic ABI decoder
(eth-abi) walks a tree of decoder objects over a byte stream and spends about 70 us on an
ERC-20 ``Transfer``; most of that is interpreter overhead, not work. Here each event is compiled
once, when its :class:`EventDecoder` is built, into one specialised Python function:

* The function reads the lowercase hex strings of :class:`~evmflow.sources.base.Log` directly.
  A 32-byte word is the slice ``data[p:p + 64]``; ``int(slice, 16)`` turns it into an integer.
  Converting the whole payload to ``bytes`` first would cost more than it saves.
* Every position that can be known when compiling is a literal in the generated code, so an
  all-static event (Transfer, Approval, Swap, Sync...) is straight-line code without loops.
* Dynamic values (``bytes``, ``string``, ``T[]``, tuples and fixed arrays holding them) get a
  generated helper function each, called with the position of the value in the hex string.

Positions are counted in hex characters of the whole string, ``0x`` included: byte ``i`` of the
payload starts at character ``2 + 2 * i``.

What counts as "does not fit" (the decoder returns ``None``) follows eth-abi's strict mode, so a
log is rejected exactly when eth-abi would raise: too few topics or too many, a payload shorter
than its head, non-zero padding (an ``address`` or ``uint8`` word with high bits set, a ``bool``
that is neither 0 nor 1, a ``bytes``/``string`` tail padded with non-zero bytes), ``intN`` words
that are not sign-extended, and offsets that point into the head or past the end of the data.
Two deliberate differences:

* An offset must point past the *real* head of its tuple or array. eth-abi estimates the head
  by counting a static tuple or nested static array as one word, so it accepts some offsets into
  the head that we reject. No encoder produces such offsets.
* A ``string`` that is not valid UTF-8 is decoded with replacement characters (U+FFFD) instead
  of making the whole log undecodable (eth-abi raises). Losing a transfer because a memo string
  is garbled is worse than a lossy memo, and surrogate escapes could not be stored in SQL text.
"""

from __future__ import annotations

import decimal
import keyword
import re
from collections.abc import Callable
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from .abi import AbiParam, EventAbi
from .errors import AbiError

__all__ = ["AbiTuple", "EventDecoder", "Params", "python_name"]

_NOT_IDENTIFIER = re.compile(r"\W")


def python_name(abi_name: str, position: int) -> str:
    """The attribute spelling of an ABI parameter or tuple component name.

    Python keywords get a trailing underscore (``from`` -> ``from_``), an empty name becomes
    ``arg{position}``. Characters Python does not allow in a name (Solidity allows ``$``) become
    ``_``, and a leading digit gets a ``_`` in front. Other names are unchanged.
    """
    if not abi_name:
        return f"arg{position}"
    name = _NOT_IDENTIFIER.sub("_", abi_name)
    if name[0].isdigit():
        name = "_" + name
    if keyword.iskeyword(name):
        name += "_"
    return name


def _unique_names(abi_names: list[str], reserved: set[str]) -> tuple[str, ...]:
    """Python names for a list of ABI names: no clash with each other or with ``reserved``."""
    taken: set[str] = set()
    names = []
    for position, abi_name in enumerate(abi_names):
        name = python_name(abi_name, position)
        while name in taken or name in reserved or (name.startswith("__") and name.endswith("__")):
            name += "_"
        taken.add(name)
        names.append(name)
    return tuple(names)


class Params:
    """The decoded parameters of one log; each event has its own subclass.

    Attributes use the Python spelling (``params.from_``); indexing accepts both spellings
    (``params["from"]``, ``params["from_"]``).
    """

    __slots__ = ()

    # Set on each generated subclass.
    _event_name: str = ""
    _names: tuple[str, ...] = ()
    _abi_names: tuple[str, ...] = ()
    _lookup: dict[str, str] = {}

    if TYPE_CHECKING:
        # The generated subclasses have one attribute per parameter: let type checkers see them.
        def __getattr__(self, name: str) -> Any: ...

    def __getitem__(self, key: str) -> Any:
        try:
            name = self._lookup[key]
        except KeyError:
            known = ", ".join(self._abi_names)
            raise KeyError(
                f"{self._event_name} has no parameter {key!r} (it has: {known})"
            ) from None
        return getattr(self, name)

    def to_dict(self) -> dict[str, Any]:
        """``{abi_name: value}``; an unnamed parameter is keyed by its ``arg{position}`` name."""
        return {
            key: getattr(self, name) for key, name in zip(self._abi_names, self._names, strict=True)
        }

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self._names)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Params):
            return NotImplemented
        return self._abi_names == other._abi_names and self._values() == other._values()

    __hash__ = None  # type: ignore[assignment]  # the values can be lists

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._names)
        return f"{type(self).__name__}({fields})"


class AbiTuple(tuple):  # type: ignore[type-arg]
    """Base of the tuple classes made for ABI tuples (structs) with named components.

    It is a tuple, so it compares equal to a plain tuple of the same values; each component is
    also an attribute, spelled like parameters are (see :func:`python_name`).
    """

    __slots__ = ()
    _fields: tuple[str, ...] = ()

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{name}={value!r}" for name, value in zip(self._fields, self, strict=True)
        )
        return f"{type(self).__name__}({fields})"

    def to_dict(self) -> dict[str, Any]:
        return dict(zip(self._fields, self, strict=True))


_TUPLE_RESERVED = {"_fields", "to_dict"}
_PARAMS_RESERVED = {name for name in dir(Params)}


def _tuple_class(name: str, abi_names: list[str]) -> type[AbiTuple]:
    fields = _unique_names(abi_names, _TUPLE_RESERVED)
    namespace: dict[str, Any] = {"__slots__": (), "_fields": fields}
    for index, field in enumerate(fields):
        namespace[field] = property(itemgetter(index), doc=f"component {index}")
    return type(name or "tuple", (AbiTuple,), namespace)


# Limitation: the Params subclasses and tuple classes are made at run time, so their instances
# cannot be pickled (pickle looks classes up by module and name). Handing decoded params to
# another process fails with PicklingError; send ``to_dict()`` instead, or register the classes
# in a module with copyreg to fix it.
def _params_class(event: EventAbi) -> type[Params]:
    abi_names = [p.name for p in event.inputs]
    names = _unique_names(abi_names, _PARAMS_RESERVED)
    keys = tuple(abi or name for abi, name in zip(abi_names, names, strict=True))
    lookup = {
        **dict(zip(names, names, strict=True)),
        **{abi: name for abi, name in zip(abi_names, names, strict=True) if abi},
    }
    cls = type(
        f"{event.name}Params",
        (Params,),
        {
            "__slots__": names,
            "_event_name": event.name,
            "_names": names,
            "_abi_names": keys,
            "_lookup": lookup,
        },
    )
    # A slot named ``__x`` is name-mangled to ``_<Class>__x``; expose it under its own name too
    # so ``params.__x`` and the generated code (which runs outside any class) can reach it.
    for name in names:
        if name.startswith("__") and name not in cls.__dict__:
            setattr(cls, name, cls.__dict__[f"_{cls.__name__.lstrip('_')}{name}"])
    return cls


# --- the type tree ---------------------------------------------------------------------------

_WORD = 64  # hex characters in a 32-byte word
_DECIMAL_CONTEXT = decimal.Context(prec=999)
_BOOL = {"0" * 64: False, "0" * 63 + "1": True}
_TYPE_RE = re.compile(r"([a-z]+)(\d*)(?:x(\d+))?((?:\[\d*\])*)")


class _AbiType:
    """One ABI type, parsed: what the code generator needs to know about it."""

    __slots__ = ("kind", "bits", "frac", "item", "length", "components", "tuple_class")

    def __init__(
        self,
        kind: str,
        bits: int = 0,
        frac: int = 0,
        item: _AbiType | None = None,
        length: int | None = None,
        components: tuple[_AbiType, ...] = (),
        tuple_class: type[AbiTuple] | None = None,
    ) -> None:
        self.kind = kind  # uint int address bool fixedbytes fixed ufixed bytes string array tuple
        self.bits = bits  # integer/fixed-point bits; for fixedbytes, the byte count
        self.frac = frac
        self.item = item
        self.length = length  # array length, None for T[]
        self.components = components
        self.tuple_class = tuple_class

    @property
    def dynamic(self) -> bool:
        if self.kind in ("bytes", "string"):
            return True
        if self.kind == "array":
            assert self.item is not None
            return self.length is None or self.item.dynamic
        if self.kind == "tuple":
            return any(c.dynamic for c in self.components)
        return False

    @property
    def head_chars(self) -> int:
        """Hex characters the type takes in its container's head (one word if dynamic)."""
        if self.dynamic:
            return _WORD
        if self.kind == "array":
            assert self.item is not None and self.length is not None
            return self.length * self.item.head_chars
        if self.kind == "tuple":
            return sum(c.head_chars for c in self.components)
        return _WORD

    @property
    def value_type(self) -> bool:
        """One word decoded to one value: the types an indexed topic stores as themselves."""
        return self.kind not in ("bytes", "string", "array", "tuple")


def _parse_type(param: AbiParam, where: str) -> _AbiType:
    def bad(why: str, hint: str) -> AbiError:
        return AbiError(f"{where}: type {param.type!r} {why}", where=None, hint=hint)

    match = _TYPE_RE.fullmatch(param.type)
    if match is None:
        raise bad("is not an ABI type", "use canonical ABI types such as uint256 or tuple[]")
    base, size, frac, dims = match.groups()
    if frac and base not in ("fixed", "ufixed"):
        raise bad("is not an ABI type", "only fixed/ufixed types take an 'MxN' suffix")

    t: _AbiType
    if base in ("uint", "int"):
        bits = int(size or 256)
        if bits % 8 or not 8 <= bits <= 256:
            raise bad("has an invalid size", "integer sizes are multiples of 8 from 8 to 256")
        t = _AbiType(base, bits=bits)
    elif base in ("fixed", "ufixed"):
        bits, places = (int(size), int(frac)) if size else (128, 18)
        if bits % 8 or not 8 <= bits <= 256 or not 0 < places <= 80:
            raise bad("has an invalid size", "use fixedMxN with M in 8..256 (step 8), N in 1..80")
        t = _AbiType(base, bits=bits, frac=places)
    elif base == "bytes" and size:
        if not 1 <= int(size) <= 32:
            raise bad("has an invalid size", "bytesN takes N from 1 to 32")
        t = _AbiType("fixedbytes", bits=int(size))
    elif base == "function" and not size:
        t = _AbiType("fixedbytes", bits=24)  # an address and a selector, stored as bytes24
    elif base in ("address", "bool", "bytes", "string") and not size:
        t = _AbiType(base)
    elif base == "tuple" and not size:
        if not param.components:
            raise bad("has no components", "give the tuple's 'components' in the ABI")
        components = tuple(
            _parse_type(c, f"{where}.{c.name or i}") for i, c in enumerate(param.components)
        )
        tuple_class = None
        if any(c.name for c in param.components):
            tuple_class = _tuple_class(param.name, [c.name for c in param.components])
        t = _AbiType("tuple", components=components, tuple_class=tuple_class)
    else:
        raise bad("is not an ABI type", "use canonical ABI types such as uint256 or tuple[]")

    for dim in re.findall(r"\[(\d*)\]", dims):
        if dim == "0":
            raise bad("has an invalid array size", "fixed-size arrays need a length of 1 or more")
        t = _AbiType("array", item=t, length=int(dim) if dim else None)
    return t


# --- code generation -------------------------------------------------------------------------


class _Malformed(Exception):
    """Raised inside generated code when the log does not fit the event; never escapes."""


def _fixed_point(value: int, places: int) -> decimal.Decimal:
    with decimal.localcontext(_DECIMAL_CONTEXT):
        return decimal.Decimal(value) / decimal.Decimal(10) ** places


def _at(base: str, offset: int) -> str:
    """A position expression: a variable plus a constant, folded when possible."""
    if not base:
        return str(offset)
    return base if offset == 0 else f"{base} + {offset}"


_UNROLL_LIMIT = 8 * _WORD  # fixed arrays with a bigger head are decoded in a loop


class _CodeGen:
    def __init__(self) -> None:
        self.namespace: dict[str, Any] = {
            "_M": _Malformed,
            "_BOOL": _BOOL,
            "_tnew": tuple.__new__,
            "_onew": object.__new__,
            "_fixed": _fixed_point,
            "_fromhex": bytes.fromhex,
        }
        self.helpers: list[str] = []
        self.count = 0

    def name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def constant(self, value: Any, prefix: str) -> str:
        name = self.name(prefix)
        self.namespace[name] = value
        return name

    def static(self, t: _AbiType, src: str, base: str, offset: int, out: str, ind: str) -> list:
        """Lines that decode static ``t`` at ``src[base + offset:]`` into the variable ``out``."""
        start, end = _at(base, offset), _at(base, offset + _WORD)
        word = f"{src}[{start}:{end}]"
        kind = t.kind
        if kind in ("uint", "ufixed"):
            lines = [f"{ind}{out} = int({word}, 16)"]
            if t.bits < 256:
                lines.append(f"{ind}if {out} >> {t.bits}: raise _M")
            if kind == "ufixed":
                lines.append(f"{ind}{out} = _fixed({out}, {t.frac})")
            return lines
        if kind in ("int", "fixed"):
            lines = [f"{ind}{out} = int({word}, 16)"]
            if t.bits == 256:
                lines.append(f"{ind}if {out} >= {1 << 255}: {out} -= {1 << 256}")
            else:
                # Valid words are sign-extended: below 2**(N-1), or at least 2**256 - 2**(N-1).
                lines += [
                    f"{ind}if {out} >= {1 << (t.bits - 1)}:",
                    f"{ind}    if {out} < {(1 << 256) - (1 << (t.bits - 1))}: raise _M",
                    f"{ind}    {out} -= {1 << 256}",
                ]
            if kind == "fixed":
                lines.append(f"{ind}{out} = _fixed({out}, {t.frac})")
            return lines
        if kind == "address":
            mid = _at(base, offset + 24)
            return [
                f"{ind}if {src}[{start}:{mid}] != '{'0' * 24}': raise _M",
                f"{ind}{out} = '0x' + {src}[{mid}:{end}]",
            ]
        if kind == "bool":
            return [f"{ind}{out} = _BOOL[{word}]"]
        if kind == "fixedbytes":
            if t.bits == 32:
                return [f"{ind}{out} = '0x' + {word}"]
            mid = _at(base, offset + 2 * t.bits)
            return [
                f"{ind}if {src}[{mid}:{end}] != '{'0' * (_WORD - 2 * t.bits)}': raise _M",
                f"{ind}{out} = '0x' + {src}[{start}:{mid}]",
            ]
        if kind == "tuple":
            lines, names, position = [], [], offset
            for component in t.components:
                name = self.name("c")
                lines += self.static(component, src, base, position, name, ind)
                names.append(name)
                position += component.head_chars
            return lines + [f"{ind}{out} = {self.tuple_expr(t, names)}"]
        assert kind == "array" and t.item is not None and t.length is not None
        item = t.item
        if t.head_chars <= _UNROLL_LIMIT:
            lines, names = [], []
            for index in range(t.length):
                name = self.name("a")
                lines += self.static(item, src, base, offset + index * item.head_chars, name, ind)
                names.append(name)
            return lines + [f"{ind}{out} = [{', '.join(names)}]"]
        stop = _at(base, offset + t.head_chars)
        each = self.item_expr(item, src)
        return [f"{ind}{out} = [{each} for i in range({start}, {stop}, {item.head_chars})]"]

    def item_expr(self, t: _AbiType, src: str) -> str:
        """An expression for static ``t`` at ``src[i:]``: inline when it needs no checks."""
        word = f"{src}[i:i + 64]"
        if t.kind == "uint" and t.bits == 256:
            return f"int({word}, 16)"
        if t.kind == "fixedbytes" and t.bits == 32:
            return f"'0x' + {word}"
        if t.kind == "bool":
            return f"_BOOL[{word}]"
        return f"{self.static_reader(t)}({src}, i)"

    def tuple_expr(self, t: _AbiType, names: list[str]) -> str:
        items = ", ".join(names) + ("," if len(names) == 1 else "")
        if t.tuple_class is None:
            return f"({items})"
        return f"_tnew({self.constant(t.tuple_class, '_T')}, ({items}))"

    def static_reader(self, t: _AbiType) -> str:
        """A helper ``f(src, position) -> value`` for static ``t``; returns its name."""
        name = self.name("_s")
        body = self.static(t, "s", "p", 0, "r", "    ")
        self.helpers.append("\n".join([f"def {name}(s, p):", *body, "    return r"]))
        return name

    def dynamic_reader(self, t: _AbiType) -> str:
        """A helper ``f(d, q, n) -> value`` for dynamic ``t`` starting at ``d[q:]``."""
        name = self.name("_d")
        body = ["    e = q + 64", "    if e > n: raise _M"]
        if t.kind in ("bytes", "string"):
            body += [
                "    s = e + 2 * int(d[q:e], 16)",
                "    z = e + (s - e + 63) // 64 * 64",
                "    if z > n or d[s:z].strip('0'): raise _M",
            ]
            if t.kind == "bytes":
                body.append("    return '0x' + d[e:s]")
            else:
                body.append("    return _fromhex(d[e:s]).decode('utf-8', 'replace')")
        elif t.kind == "array":
            assert t.item is not None
            if t.length is None:
                body.append("    count = int(d[q:e], 16)")
                body += self.items(t.item, "e", "count")
            else:
                body = self.items(t.item, "q", str(t.length))
        else:
            body = self.tuple_body(t, "d", "q", 0, "n", "r", "    ") + ["    return r"]
        self.helpers.append("\n".join([f"def {name}(d, q, n):", *body]))
        return name

    def items(self, item: _AbiType, frame: str, count: str) -> list[str]:
        """Helper-body lines returning a list of ``count`` items whose head starts at ``frame``."""
        if not item.dynamic:
            size = item.head_chars
            return [
                f"    z = {frame} + {count} * {size}",
                "    if z > n: raise _M",
                f"    return [{self.item_expr(item, 'd')} for i in range({frame}, z, {size})]",
            ]
        reader = self.dynamic_reader(item)
        return [
            f"    h = {frame} + {count} * 64",
            "    if h > n: raise _M",
            "    out = []",
            f"    for i in range({frame}, h, 64):",
            f"        r = {frame} + 2 * int(d[i:i + 64], 16)",
            "        if r < h or r >= n: raise _M",
            f"        out.append({reader}(d, r, n))",
            "    return out",
        ]

    def tuple_body(
        self, t: _AbiType, src: str, base: str, offset: int, n: str, out: str, ind: str
    ) -> list[str]:
        """Lines decoding a dynamic tuple whose head starts at ``base + offset`` into ``out``."""
        head_end = _at(base, offset + sum(c.head_chars for c in t.components))
        lines = [f"{ind}if {head_end} > {n}: raise _M"]
        names, position = [], offset
        for component in t.components:
            name = self.name("c")
            if component.dynamic:
                word = f"{src}[{_at(base, position)}:{_at(base, position + _WORD)}]"
                reader = self.dynamic_reader(component)
                start = _at(base, offset)
                lines += [
                    f"{ind}{name} = {start} + 2 * int({word}, 16)",
                    f"{ind}if {name} < {head_end} or {name} >= {n}: raise _M",
                    f"{ind}{name} = {reader}({src}, {name}, {n})",
                ]
            else:
                lines += self.static(component, src, base, position, name, ind)
            names.append(name)
            position += component.head_chars
        return lines + [f"{ind}{out} = {self.tuple_expr(t, names)}"]


class EventDecoder:
    """Decodes the logs of one event into instances of its :class:`Params` subclass.

    ``decode(topics, data)`` takes the lowercase ``0x`` hex strings of a
    :class:`~evmflow.sources.base.Log` and returns ``None`` when the log does not fit the event
    (another event with the same topic0, such as an ERC-721 ``Transfer`` for an ERC-20 ABI, or
    malformed data). ``source`` holds the generated Python code, for the curious.
    """

    decode: Callable[[list[str], str], Params | None]

    def __init__(self, event: EventAbi) -> None:
        self.event = event
        self.params_class = _params_class(event)
        where = f"event {event.signature}"
        types = [
            _parse_type(p, f"{where} parameter {p.name or i}") for i, p in enumerate(event.inputs)
        ]
        self.source, namespace = self._generate(types)
        code = compile(self.source, f"<evmflow decoder for {event.signature}>", "exec")
        exec(code, namespace)
        # An instance attribute, not a method: calling it skips building a bound method.
        self.decode = namespace["decode"]

    def _generate(self, types: list[_AbiType]) -> tuple[str, dict[str, Any]]:
        event, gen = self.event, _CodeGen()
        first_topic = 0 if event.anonymous else 1
        topic_count = first_topic + sum(1 for p in event.inputs if p.indexed)
        head_chars = sum(
            t.head_chars for t, p in zip(types, event.inputs, strict=True) if not p.indexed
        )

        checks = [f"    if len(topics) != {topic_count}: return None"]
        if not event.anonymous:
            checks.append(f"    if topics[0] != '{event.topic0}': return None")
        checks.append("    n = len(data)")
        if head_chars:
            checks.append(f"    if n < {2 + head_chars}: return None")

        body, topic, position = [], first_topic, 2
        values = [f"v{i}" for i in range(len(types))]
        for t, param, out in zip(types, event.inputs, values, strict=True):
            if param.indexed:
                if t.value_type:
                    body.append(f"        t{topic} = topics[{topic}]")
                    body += gen.static(t, f"t{topic}", "", 2, out, "        ")
                else:
                    # Hashed by the chain: the topic is all there is.
                    body.append(f"        {out} = topics[{topic}]")
                topic += 1
                continue
            if t.dynamic:
                reader = gen.dynamic_reader(t)
                body += [
                    f"        {out} = 2 + 2 * int(data[{position}:{position + _WORD}], 16)",
                    f"        if {out} < {2 + head_chars} or {out} >= n: raise _M",
                    f"        {out} = {reader}(data, {out}, n)",
                ]
            else:
                body += gen.static(t, "data", "", position, out, "        ")
            position += t.head_chars

        params = gen.constant(self.params_class, "_P")
        build = [f"    o = _onew({params})"]
        build += [
            f"    o.{name} = {v}" for name, v in zip(self.params_class._names, values, strict=True)
        ]
        lines = [
            "def decode(topics, data):",
            *checks,
            "    try:",
            *(body or ["        pass"]),
            "    except (_M, ValueError, KeyError, IndexError):",
            "        return None",
            *build,
            "    return o",
        ]
        source = "\n\n".join([*gen.helpers, "\n".join(lines)]) + "\n"
        return source, gen.namespace
