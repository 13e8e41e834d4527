"""The event decoder agrees with eth-abi, value for value, on real and on generated logs."""

from __future__ import annotations

import dataclasses
import gzip
import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import eth_abi
import pytest
from eth_abi.exceptions import DecodingError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evmflow.abi import AbiParam, EventAbi, events_from_abi, keccak256, load_abi_file
from evmflow.decode import AbiTuple, EventDecoder, Params, python_name
from evmflow.errors import AbiError

DATA = Path("/work/shared/data")
WORD = "0" * 64


# --- an independent reference: eth-abi plus plain Python --------------------------------------


def _expected(param: AbiParam, value: Any) -> Any:
    """eth-abi's value in evmflow's spelling: hex strings, lists for arrays, tuples for tuples."""
    if param.type.endswith("]"):
        item = dataclasses.replace(param, type=param.type[: param.type.rindex("[")])
        return [_expected(item, v) for v in value]
    if param.type == "tuple":
        return tuple(_expected(c, v) for c, v in zip(param.components, value, strict=True))
    if param.type == "string":
        # Decoded as bytes by the reference (see below), so invalid UTF-8 cannot make it fail.
        return value.decode("utf-8", "replace")
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if param.type == "address":
        return value.lower()
    return value


def _as_bytes_type(canonical: str) -> str:
    return re.sub(r"\bstring\b", "bytes", canonical)


def reference_decode(event: EventAbi, topics: list[str], data: str) -> dict | None:
    """The log decoded with eth-abi, or None where eth-abi cannot decode it."""
    first = 0 if event.anonymous else 1
    indexed = [p for p in event.inputs if p.indexed]
    if len(topics) != first + len(indexed) or (first and topics[0] != event.topic0):
        return None
    body = [p for p in event.inputs if not p.indexed]
    try:
        # Strings are decoded as bytes (same layout) and turned into text by _expected.
        decoded = eth_abi.decode(
            [_as_bytes_type(p.canonical_type) for p in body], bytes.fromhex(data[2:])
        )
        body_values = iter(decoded)
        values, topic = {}, first
        for position, param in enumerate(event.inputs):
            key = param.name or f"arg{position}"
            if not param.indexed:
                values[key] = _expected(param, next(body_values))
                continue
            if (
                param.type in ("string", "bytes")
                or param.type.startswith("tuple")
                or "[" in param.type
            ):
                values[key] = topics[topic]
            else:
                word = bytes.fromhex(topics[topic][2:])
                values[key] = _expected(param, eth_abi.decode([param.type], word)[0])
            topic += 1
    except (DecodingError, OverflowError):  # eth-abi overflows on lengths beyond sys.maxsize
        return None
    return values


def _event(signature_inputs: list[tuple[str, str, bool]], name="E", anonymous=False) -> EventAbi:
    inputs = tuple(AbiParam(name=n, type=t, indexed=i) for n, t, i in signature_inputs)
    return EventAbi(name=name, inputs=inputs, anonymous=anonymous)


def _topic_of(value_type: str, value: object) -> str:
    return "0x" + eth_abi.encode([value_type], [value]).hex()


def _data_of(types: list[str], values: list) -> str:
    return "0x" + eth_abi.encode(types, values).hex()


# --- real mainnet logs --------------------------------------------------------------------------


def _real_logs() -> list[dict]:
    logs = []
    for path in sorted((DATA / "mainnet").glob("*.logs.jsonl.gz")):
        with gzip.open(path, "rt") as lines:
            logs += [json.loads(line) for line in lines]
    return logs


def _abi_events_by_topic0() -> dict[str, list[EventAbi]]:
    table = json.loads((DATA / "abis" / "event_topics.json").read_text())
    by_topic: dict[str, list[EventAbi]] = {}
    for topic0, entry in table.items():
        shapes = {}
        for abi_file in entry["abis"]:
            for event in load_abi_file(DATA / "abis" / abi_file):
                if event.topic0 == topic0:
                    shapes[(event.signature, tuple(p.indexed for p in event.inputs))] = event
        by_topic[topic0] = list(shapes.values())
    return by_topic


def test_every_real_log_decodes_like_eth_abi_or_is_none_exactly_when_eth_abi_fails():
    events = _abi_events_by_topic0()
    decoders = {id(e): EventDecoder(e) for group in events.values() for e in group}
    decoded = undecodable = 0
    for raw in _real_logs():
        topics, data = [t.lower() for t in raw["topics"]], raw["data"].lower()
        for event in events.get(topics[0] if topics else "", []):
            expected = reference_decode(event, topics, data)
            params = decoders[id(event)].decode(topics, data)
            if expected is None:
                assert params is None, (event.signature, raw)
                undecodable += 1
            else:
                assert params is not None, (event.signature, raw)
                assert params.to_dict() == expected
                decoded += 1
    # Sanity on the corpus itself: thousands of fits, and ERC-721 Transfers that do not fit.
    assert decoded > 15_000
    assert undecodable > 600


def test_erc721_transfer_does_not_fit_the_erc20_transfer_event():
    erc20 = {e.name: e for e in load_abi_file(DATA / "abis" / "ERC20.openzeppelin-4.9.6.json")}
    transfer = erc20["Transfer"]
    nft = next(
        raw
        for raw in _real_logs()
        if raw["topics"] and raw["topics"][0] == transfer.topic0 and len(raw["topics"]) == 4
    )
    assert EventDecoder(transfer).decode(nft["topics"], nft["data"]) is None


def test_erc20_transfer_gives_lowercase_addresses_and_the_integer_amount():
    transfer = _event(
        [("from", "address", True), ("to", "address", True), ("value", "uint256", False)],
        "Transfer",
    )
    sender, receiver = "0x" + "ab" * 20, "0x" + "0c" * 20
    topics = [transfer.topic0, _topic_of("address", sender), _topic_of("address", receiver)]
    params = EventDecoder(transfer).decode(topics, _data_of(["uint256"], [10**18 + 7]))
    assert params is not None
    assert (params.from_, params.to, params.value) == (sender, receiver, 10**18 + 7)
    assert params["from"] == params["from_"] == sender
    assert params.to_dict() == {"from": sender, "to": receiver, "value": 10**18 + 7}
    assert repr(params) == f"TransferParams(from_='{sender}', to='{receiver}', value={10**18 + 7})"


# --- names and the params object ----------------------------------------------------------------


def test_python_name_appends_an_underscore_to_keywords_and_names_empty_params_by_position():
    assert python_name("from", 0) == "from_"
    assert python_name("in", 1) == "in_"
    assert python_name("class", 2) == "class_"
    assert python_name("None", 2) == "None_"
    assert python_name("", 3) == "arg3"
    assert python_name("amount0In", 1) == "amount0In"
    assert python_name("_value", 1) == "_value"


def test_keyword_and_unnamed_params_are_reachable_by_both_spellings():
    event = _event([("class", "uint8", False), ("", "bool", False), ("in", "address", True)])
    topics = [event.topic0, _topic_of("address", "0x" + "11" * 20)]
    params = EventDecoder(event).decode(topics, _data_of(["uint8", "bool"], [200, True]))
    assert params is not None
    assert (params.class_, params.arg1, params.in_) == (200, True, "0x" + "11" * 20)
    assert params["class"] == params["class_"] == 200
    assert params["arg1"] is True
    assert params.to_dict() == {"class": 200, "arg1": True, "in": "0x" + "11" * 20}
    with pytest.raises(KeyError, match="no parameter 'missing'"):
        params["missing"]


def test_params_compare_by_values_and_belong_to_a_per_event_class():
    event = _event([("a", "uint256", False)])
    decoder, other_decoder = EventDecoder(event), EventDecoder(event)
    one = decoder.decode([event.topic0], _data_of(["uint256"], [1]))
    same = other_decoder.decode([event.topic0], _data_of(["uint256"], [1]))
    two = decoder.decode([event.topic0], _data_of(["uint256"], [2]))
    assert one == same and one != two
    assert isinstance(one, Params) and type(one) is decoder.params_class
    assert decoder.params_class.__slots__ == ("a",)


def test_a_param_named_like_a_params_method_does_not_hide_the_method():
    event = _event([("to_dict", "uint256", False)])
    params = EventDecoder(event).decode([event.topic0], _data_of(["uint256"], [5]))
    assert params is not None
    assert params.to_dict_ == 5
    assert params.to_dict() == {"to_dict": 5}


def test_named_tuple_components_are_attributes_with_keyword_names_escaped():
    order = AbiParam(
        name="order",
        type="tuple",
        components=(
            AbiParam("from", "address"),
            AbiParam("amount", "uint128"),
            AbiParam("tags", "string[]"),
        ),
    )
    event = EventAbi(name="Filled", inputs=(order,))
    value = ("0x" + "22" * 20, 99, ["a", "bc"])
    data = _data_of([order.canonical_type], [value])
    params = EventDecoder(event).decode([event.topic0], data)
    assert params is not None
    assert isinstance(params.order, AbiTuple)
    assert params.order == value
    assert (params.order.from_, params.order.amount, params.order.tags) == value
    assert repr(params.order) == f"order(from_='0x{'22' * 20}', amount=99, tags=['a', 'bc'])"


def test_unnamed_tuple_components_give_a_plain_tuple():
    pair = AbiParam(
        name="p", type="tuple", components=(AbiParam("", "uint8"), AbiParam("", "bool"))
    )
    event = EventAbi(name="E", inputs=(pair,))
    params = EventDecoder(event).decode([event.topic0], _data_of(["(uint8,bool)"], [(3, False)]))
    assert params is not None and type(params.p) is tuple and params.p == (3, False)


# --- special shapes -----------------------------------------------------------------------------


def test_anonymous_events_have_no_topic0_and_every_topic_is_an_indexed_param():
    event = _event(
        [("who", "address", True), ("n", "int24", True), ("x", "uint8", False)], anonymous=True
    )
    topics = [_topic_of("address", "0x" + "aa" * 20), _topic_of("int24", -5)]
    decoder = EventDecoder(event)
    params = decoder.decode(topics, _data_of(["uint8"], [7]))
    assert params is not None and params.to_dict() == {"who": "0x" + "aa" * 20, "n": -5, "x": 7}
    assert decoder.decode([event.topic0, *topics], _data_of(["uint8"], [7])) is None


def test_indexed_strings_and_arrays_are_the_topic_hash():
    event = _event([("name", "string", True), ("ids", "uint256[]", True), ("v", "bool", False)])
    name_hash = "0x" + keccak256(b"alice").hex()
    ids_hash = "0x" + keccak256(eth_abi.encode(["uint256", "uint256"], [1, 2])).hex()
    params = EventDecoder(event).decode(
        [event.topic0, name_hash, ids_hash], _data_of(["bool"], [True])
    )
    assert params is not None and (params.name, params.ids, params.v) == (name_hash, ids_hash, True)


def test_strings_match_eth_abi_and_invalid_utf8_becomes_replacement_characters():
    event = _event([("s", "string", False)])
    decoder = EventDecoder(event)
    text = "héllo ✓ \x00 end"
    data = _data_of(["string"], [text])
    params = decoder.decode([event.topic0], data)
    assert params is not None and params.s == eth_abi.decode(["string"], bytes.fromhex(data[2:]))[0]

    broken = _data_of(["bytes"], [b"ok\xff\xfe!"])  # the same layout as a string
    params = decoder.decode([event.topic0], broken)
    assert params is not None and params.s == "ok\ufffd\ufffd!"


def test_fixed_point_values_are_decimals_like_eth_abi():
    event = _event([("f", "fixed128x10", False), ("u", "ufixed32x2", False)])
    data = _data_of(["fixed128x10", "ufixed32x2"], [Decimal("-1.5"), Decimal("12.34")])
    params = EventDecoder(event).decode([event.topic0], data)
    expected = eth_abi.decode(["fixed128x10", "ufixed32x2"], bytes.fromhex(data[2:]))
    assert params is not None and (params.f, params.u) == expected == (
        Decimal("-1.5"),
        Decimal("12.34"),
    )


def test_large_fixed_arrays_decode_in_a_loop():
    event = _event(
        [("a", "uint256[40]", False), ("b", "address[20]", False), ("c", "uint8", False)]
    )
    values = [list(range(40)), ["0x" + f"{i:040x}" for i in range(20)], 255]
    params = EventDecoder(event).decode(
        [event.topic0], _data_of(["uint256[40]", "address[20]", "uint8"], values)
    )
    assert params is not None and [params.a, params.b, params.c] == values


def test_an_unknown_type_is_an_abi_error_naming_the_event_and_parameter():
    event = _event([("x", "uint7", False)])
    with pytest.raises(AbiError, match=r"event E\(uint7\) parameter x: type 'uint7'"):
        EventDecoder(event)


# --- logs that do not fit -----------------------------------------------------------------------


def _check_none_like_eth_abi(types: list[str], data: str) -> None:
    event = _event([(f"p{i}", t, False) for i, t in enumerate(types)])
    with pytest.raises(DecodingError):
        eth_abi.decode([_as_bytes_type(t) for t in types], bytes.fromhex(data[2:]))
    assert EventDecoder(event).decode([event.topic0], data) is None


@pytest.mark.parametrize(
    ("types", "data"),
    [
        (["uint256"], "0x" + "00" * 31),  # data too short
        (["uint256", "uint256"], "0x" + WORD),  # second word missing
        (["address"], "0x" + "01" + "00" * 31),  # dirty address padding
        (["uint8"], "0x" + "00" * 30 + "0100"),  # uint8 above 255
        (["int8"], "0x" + "00" * 31 + "80"),  # int8 -128 not sign-extended
        (["bool"], "0x" + "00" * 31 + "02"),  # bool neither 0 nor 1
        (["bytes4"], "0x" + "aabbccdd" + "00" * 27 + "01"),  # bytes4 with dirty padding
        (["string"], "0x" + f"{0x20:064x}"),  # offset at the end of the data
        (["string"], "0x" + f"{0x00:064x}" + f"{1:064x}" + "61" + "00" * 31),  # into head
        (["string"], "0x" + f"{0x20:064x}" + f"{40:064x}" + "61" * 32),  # length beyond end
        (["bytes"], "0x" + f"{0x20:064x}" + f"{1:064x}" + "61" + "00" * 30 + "01"),  # padding
        (["uint256[]"], "0x" + f"{0x20:064x}" + f"{2**200:064x}" + WORD),  # absurd length
        (["string[]"], "0x" + f"{0x20:064x}" + f"{1:064x}" + f"{0x0:064x}"),  # item into head
    ],
)
def test_malformed_data_gives_none_where_eth_abi_raises(types, data):
    _check_none_like_eth_abi(types, data)


def test_a_pointer_into_a_nested_tuples_own_head_gives_none_like_eth_abi():
    components = (AbiParam("maker", "address"), AbiParam("ids", "uint256[]"))
    event = EventAbi(name="E", inputs=(AbiParam("t", "tuple", components=components),))
    # The tuple starts at 0x20; its ids pointer (0x20) aims at the pointer word itself, which
    # read as a length (32) would find enough words after it.
    data = "0x" + f"{0x20:064x}" + "00" * 12 + "11" * 20 + f"{0x20:064x}" + WORD * 33
    with pytest.raises(DecodingError):
        eth_abi.decode(["(address,uint256[])"], bytes.fromhex(data[2:]))
    assert EventDecoder(event).decode([event.topic0], data) is None


def test_wrong_topic_count_or_topic0_gives_none():
    event = _event([("a", "address", True), ("b", "uint256", False)])
    decoder, data = EventDecoder(event), _data_of(["uint256"], [1])
    topic = _topic_of("address", "0x" + "01" * 20)
    assert decoder.decode([event.topic0], data) is None
    assert decoder.decode([event.topic0, topic, topic], data) is None
    assert decoder.decode(["0x" + "ff" * 32, topic], data) is None
    assert decoder.decode([event.topic0, "0x" + "ff" * 32], data) is None  # dirty address topic
    assert decoder.decode([event.topic0, topic], data) is not None


# --- generated events ---------------------------------------------------------------------------

_BASE_TYPES = [
    "uint8", "uint24", "uint64", "uint112", "uint160", "uint256", "int8", "int24", "int128",
    "int256", "address", "bool", "bytes1", "bytes4", "bytes20", "bytes31", "bytes32", "bytes",
    "string",
]  # fmt: skip
_NAMES = ["value", "from", "", "class", "_id", "to", "amount", "data"]

type_trees = st.recursive(
    st.sampled_from(_BASE_TYPES),
    lambda inner: st.one_of(
        st.tuples(st.just("array"), inner, st.sampled_from([None, 1, 2, 3])),
        st.tuples(st.just("tuple"), st.lists(inner, min_size=1, max_size=3)),
    ),
    max_leaves=6,
)


def _param(tree: Any, name: str, indexed: bool = False) -> AbiParam:
    if isinstance(tree, str):
        return AbiParam(name=name, type=tree, indexed=indexed)
    if tree[0] == "array":
        item = _param(tree[1], name)
        suffix = f"[{tree[2] or ''}]"
        return dataclasses.replace(item, type=item.type + suffix, indexed=indexed)
    components = tuple(_param(c, _NAMES[i % len(_NAMES)]) for i, c in enumerate(tree[1]))
    return AbiParam(name=name, type="tuple", indexed=indexed, components=components)


def _values(tree: Any) -> st.SearchStrategy:
    if isinstance(tree, str):
        if tree.startswith("uint"):
            return st.integers(0, 2 ** int(tree[4:]) - 1)
        if tree.startswith("int"):
            bits = int(tree[3:])
            return st.integers(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
        if tree == "address":
            return st.binary(min_size=20, max_size=20).map(lambda b: "0x" + b.hex())
        if tree == "bool":
            return st.booleans()
        if tree == "bytes":
            return st.binary(max_size=70)
        if tree == "string":
            return st.text(max_size=20)
        size = int(tree[5:])
        return st.binary(min_size=size, max_size=size)
    if tree[0] == "array":
        length = tree[2]
        return st.lists(_values(tree[1]), min_size=length or 0, max_size=length or 3)
    return st.tuples(*(_values(c) for c in tree[1]))


def _as_expected(param: AbiParam, value: Any) -> Any:
    if param.type == "string":
        return value  # already text
    if param.type.endswith("]"):
        item = dataclasses.replace(param, type=param.type[: param.type.rindex("[")])
        return [_as_expected(item, v) for v in value]
    if param.type == "tuple":
        return tuple(_as_expected(c, v) for c, v in zip(param.components, value, strict=True))
    return "0x" + value.hex() if isinstance(value, bytes) else value


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    shape=st.lists(st.tuples(type_trees, st.booleans()), min_size=1, max_size=5),
    anonymous=st.booleans(),
    draw=st.data(),
)
def test_generated_events_round_trip_through_eth_abi_encoding(shape, anonymous, draw):
    budget = 4 if anonymous else 3
    params = []
    for position, (tree, indexed) in enumerate(shape):
        indexed = indexed and sum(p.indexed for p in params) < budget
        params.append(_param(tree, _NAMES[position % len(_NAMES)], indexed))
    event = EventAbi(name="Generated", inputs=tuple(params), anonymous=anonymous)
    values = [draw.draw(_values(tree)) for tree, _ in shape]

    topics = [] if anonymous else [event.topic0]
    expected = []
    for param, value in zip(params, values, strict=True):
        if not param.indexed:
            expected.append(_as_expected(param, value))
        elif (
            param.type in ("string", "bytes") or param.type.startswith("tuple") or "[" in param.type
        ):
            # The chain stores a hash; any 32 bytes will do to check it is passed through.
            raw = (
                value.encode()
                if isinstance(value, str)
                else eth_abi.encode([param.canonical_type], [value])
            )
            topics.append("0x" + keccak256(raw).hex())
            expected.append(topics[-1])
        else:
            topics.append(_topic_of(param.type, value))
            expected.append(_as_expected(param, value))
    body = [(p, v) for p, v in zip(params, values, strict=True) if not p.indexed]
    data = _data_of([p.canonical_type for p, _ in body], [v for _, v in body])

    decoded = EventDecoder(event).decode(topics, data)
    assert decoded is not None, data
    assert list(decoded.to_dict().values()) == expected

    # A shorter payload: None exactly when eth-abi fails, else the same values.
    decoder = EventDecoder(event)
    cut = draw.draw(st.integers(0, max(0, (len(data) - 2) // 2 - 1)))
    short = data[: 2 + 2 * cut]
    reference = reference_decode(event, topics, short)
    decoded = decoder.decode(topics, short)
    assert (decoded.to_dict() if decoded is not None else None) == reference

    # One word overwritten (a pointer, a length, a value...): the same, except that eth-abi
    # counts a static tuple or nested static array as one head word and so accepts some
    # pointers into a head, which evmflow rejects (see evmflow.decode's docstring).
    words = (len(data) - 2) // 64
    if words:
        index = draw.draw(st.integers(0, words - 1))
        new = draw.draw(st.one_of(st.integers(0, words * 32 + 64), st.integers(0, 2**256 - 1)))
        at = 2 + 64 * index
        mutated = data[:at] + f"{new:064x}" + data[at + 64 :]
        reference = reference_decode(event, topics, mutated)
        decoded = decoder.decode(topics, mutated)
        ours = decoded.to_dict() if decoded is not None else None
        if any(_has_multiword_static_part(p) for p in params if not p.indexed):
            assert ours is None or ours == reference
        else:
            assert ours == reference


def _has_multiword_static_part(param: AbiParam) -> bool:
    """Whether a static tuple, or a fixed array of static composites, sits in this type."""
    if param.type.endswith("]"):
        item = dataclasses.replace(param, type=param.type[: param.type.rindex("[")])
        static_item = (
            "string" not in item.canonical_type
            and "bytes" not in re.sub(r"bytes\d+", "", item.canonical_type)
            and "[]" not in item.canonical_type
        )
        composite = item.type == "tuple" or item.type.endswith("]")
        return (static_item and composite) or _has_multiword_static_part(item)
    if param.type == "tuple":
        static = (
            "string" not in param.canonical_type
            and "[]" not in param.canonical_type
            and ("bytes" not in re.sub(r"bytes\d+", "", param.canonical_type))
        )
        return static or any(_has_multiword_static_part(c) for c in param.components)
    return False


def test_abi_files_with_many_events_all_compile():
    for path in sorted((DATA / "abis").glob("*.json")):
        if path.name == "event_topics.json":
            continue
        for event in events_from_abi(json.loads(path.read_text())):
            assert EventDecoder(event).event is event


def test_short_integer_names_in_an_abi_file_hash_as_their_canonical_types():
    from eth_utils import keccak

    from evmflow.abi import events_from_abi

    abi = [
        {
            "type": "event",
            "name": "Moved",
            "inputs": [
                {"name": "who", "type": "address", "indexed": True},
                {"name": "amounts", "type": "uint[2]", "indexed": False},
                {"name": "delta", "type": "int", "indexed": False},
            ],
        }
    ]
    (event,) = events_from_abi(abi)

    assert event.signature == "Moved(address,uint256[2],int256)"
    assert event.topic0 == "0x" + keccak(text="Moved(address,uint256[2],int256)").hex()
