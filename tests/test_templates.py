"""Project templates: each one runs to its end block with ``evmflow run``, and stores what the
raw mainnet logs say (expected values computed here with plain Python from the JSONL data)."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from evmflow.abi import AbiParam
from evmflow.errors import AbiError, UserError
from evmflow.templates import write_template
from evmflow.templates.from_abi import graphql_type, write_from_abi
from evmflow.testing import TestIndexer, indexed_topic
from tests.conftest import (
    as_int,
    assert_ran,
    dump_sqlite,
    entity_rows,
    read_jsonl_gz,
    run_evmflow,
)

SHARED = Path("/work/shared/data")
TEMPLATES = Path(__file__).resolve().parents[1] / "src" / "evmflow" / "templates"
WETH = "0xc02aaa39b223fe8d0a0e5c4f27ead9083c756cc2"
DEPOSIT = "0xe1fffcc4923d04b559f4d29a8bfc6cda04eb5b0d3c460751c2402c5c5cc9109c"
PAIR_CREATED = "0x0d3648bd0f6ba80134a33ba9275ac585d9d315f0ad8355cddefde31afa28d0e9"
SWAP = "0xd78ad95fa46c994b6551d0da85fc275fe613ce37657fb8d5e3d130840159d822"
SYNC = "0x1c411e9a96e071241c2f21f7726b17ae89e3cab4c78be50e062b03a9fffbbad1"
FACTORY = "0x5c69bee701ef814a2b6a3edd4b1652cb9cc5aa6f"


def words(data: str) -> list[int]:
    return [int(data[2 + i : 66 + i], 16) for i in range(0, len(data) - 2, 64)]


def address_of(word: str) -> str:
    return "0x" + word[-40:]


def run_project(directory: Path) -> dict:
    assert_ran(run_evmflow("run", directory, "--no-progress"))
    return dump_sqlite(directory / ".evmflow" / "index.db")


def test_blank_template_totals_every_weth_deposit(tmp_path):
    project = tmp_path / "blank"
    write_template("blank", project)
    expected: dict[str, list[int]] = {}
    for log in read_jsonl_gz(TEMPLATES / "blank/data/weth-deposits-17686110.logs.jsonl.gz"):
        assert log["address"] == WETH and log["topics"][0] == DEPOSIT
        entry = expected.setdefault(address_of(log["topics"][1]), [0, 0, 0])
        entry[0] += int(log["data"], 16)
        entry[1] += 1
        entry[2] = int(log["blockNumber"], 16)

    dump = run_project(project)

    stored = {
        i: [as_int(total), deposits, last]
        for i, (_, total, deposits, last) in entity_rows(dump, "Depositor").items()
    }
    assert stored == expected
    assert sum(e[1] for e in expected.values()) == 498


def test_uniswap_v2_template_follows_pairs_swaps_and_reserves(tmp_path):
    project = tmp_path / "uni"
    write_template("uniswap-v2", project)
    pairs: dict[str, dict] = {}
    swaps = 0

    def pair(address: str) -> dict:
        empty = {"token0": None, "token1": None, "created": None, "reserves": (0, 0)}
        return pairs.setdefault(address, {**empty, "swaps": 0, "volume": (0, 0)})

    for log in read_jsonl_gz(TEMPLATES / "uniswap-v2/data/uniswap-v2-17686110.logs.jsonl.gz"):
        topic0, values = log["topics"][0], words(log["data"])
        if topic0 == PAIR_CREATED and log["address"] == FACTORY:
            p = pair(address_of(log["data"][2:66]))
            p["token0"], p["token1"] = address_of(log["topics"][1]), address_of(log["topics"][2])
            p["created"] = int(log["blockNumber"], 16)
        elif topic0 == SYNC and len(log["topics"]) == 1 and len(values) == 2:
            pair(log["address"])["reserves"] = tuple(values)
        elif topic0 == SWAP and len(log["topics"]) == 3 and len(values) == 4:
            p = pair(log["address"])
            p["swaps"] += 1
            v0, v1 = p["volume"]
            p["volume"] = (v0 + values[0] + values[2], v1 + values[1] + values[3])
            swaps += 1

    dump = run_project(project)

    stored = {
        row[0]: {
            "token0": row[1],
            "token1": row[2],
            "created": row[3],
            "reserves": (as_int(row[4]), as_int(row[5])),
            "swaps": row[6],
            "volume": (as_int(row[7]), as_int(row[8])),
        }
        for row in dump["Pair"]
    }
    assert stored == pairs
    assert len(dump["Swap"]) == swaps == 881
    assert sum(1 for p in pairs.values() if p["created"] is not None) == 2


def test_from_abi_project_stores_every_chosen_event_of_the_contract(tmp_path):
    project = tmp_path / "weth"
    written = write_from_abi(
        project,
        SHARED / "abis/WETH9.json",
        address=WETH.upper().replace("0X", "0x"),
        events=["Deposit", "Withdrawal"],
        start_block=17686110,
        end_block=17686312,
        archive=SHARED / "mainnet/firehose-17686110",
    )
    assert sorted(p.relative_to(project).as_posix() for p in written) == [
        "abis/WETH9.json",
        "data/firehose-17686110.blocks.jsonl.gz",
        "data/firehose-17686110.logs.jsonl.gz",
        "evmflow.yaml",
        "handlers.py",
        "schema.graphql",
    ]
    withdrawal = "0x7fcf532c15f0a6db0bd6d0e038bea71d30d808c7d98cb3bf7268a95bf5081b65"
    expected: dict[str, dict[str, tuple]] = {"Deposit": {}, "Withdrawal": {}}
    for log in read_jsonl_gz(SHARED / "mainnet/firehose-17686110.logs.jsonl.gz"):
        if log["address"] != WETH or log["topics"][0] not in (DEPOSIT, withdrawal):
            continue
        block, index = int(log["blockNumber"], 16), int(log["logIndex"], 16)
        table = "Deposit" if log["topics"][0] == DEPOSIT else "Withdrawal"
        expected[table][f"1-{block}-{index}"] = (
            address_of(log["topics"][1]),
            int(log["data"], 16),
            block,
            log["transactionHash"],
            index,
            WETH,
        )

    dump = run_project(project)

    for table in ("Deposit", "Withdrawal"):
        stored = {
            i: (who, as_int(wad), block, tx, index, contract)
            for i, (_, who, wad, block, _, tx, index, contract) in entity_rows(dump, table).items()
        }
        assert stored == expected[table]
    assert (len(expected["Deposit"]), len(expected["Withdrawal"])) == (498, 368)


COMPLEX_ABI = [
    {
        "type": "event",
        "name": "Order",
        "anonymous": False,
        "inputs": [
            {"name": "from", "type": "address", "indexed": True},
            {"name": "label", "type": "string", "indexed": True},
            {"name": "id", "type": "uint64", "indexed": False},
            {"name": "prices", "type": "uint256[]", "indexed": False},
            {
                "name": "terms",
                "type": "tuple",
                "indexed": False,
                "components": [
                    {"name": "amount", "type": "uint256"},
                    {"name": "maker", "type": "address"},
                ],
            },
            {"name": "", "type": "int8", "indexed": False},
            {"name": "rate", "type": "ufixed128x18", "indexed": False},
        ],
    }
]


def test_from_abi_maps_every_kind_of_parameter_and_stores_it(tmp_path):
    abi = tmp_path / "Exchange.json"
    abi.write_text(json.dumps(COMPLEX_ABI))
    project = tmp_path / "exchange"
    write_from_abi(project, abi, rpc_url="http://127.0.0.1:1", start_block=5)

    schema = (project / "schema.graphql").read_text()
    assert "  from: Bytes! @index\n  label: Bytes! @index\n  idParam: BigInt!\n" in schema
    assert "  prices: [BigInt!]!\n  terms: Json!\n  arg5: Int!\n  rate: BigDecimal!\n" in schema

    maker, sender = "0x" + "11" * 20, "0x" + "22" * 20
    with TestIndexer(project) as kit:
        event = kit.event(
            "Exchange",
            "Order",
            params={"from": sender},
            label=indexed_topic("spot"),
            id=7,
            prices=[1, 2**255],
            terms={"amount": 2**70, "maker": maker},
            arg5=-3,
            rate=Decimal("0.25"),
        )
        kit.run(event)
        stored = kit.get("Order", f"1-5-{event.log_index}")
    assert stored.to_dict() == {
        "id": "1-5-0",
        "from": sender,
        "label": indexed_topic("spot"),
        "idParam": 7,
        "prices": [1, 2**255],
        "terms": {"amount": str(2**70), "maker": maker},
        "arg5": -3,
        "rate": Decimal("0.25"),
        "blockNumber": 5,
        "blockTimestamp": stored.blockTimestamp,
        "transactionHash": event.transaction_hash,
        "logIndex": 0,
        "contract": event.address,
    }
    assert stored.blockTimestamp.timestamp() == event.block_timestamp


@pytest.mark.parametrize(
    ("abi_type", "indexed", "expected"),
    [
        ("uint8", False, "Int"),
        ("uint56", False, "Int"),
        ("uint64", False, "BigInt"),
        ("int64", False, "Int"),
        ("int72", False, "BigInt"),
        ("uint256", False, "BigInt"),
        ("address", False, "Bytes"),
        ("bytes32", False, "Bytes"),
        ("bytes", False, "Bytes"),
        ("bool", False, "Boolean"),
        ("string", False, "String"),
        ("string", True, "Bytes"),
        ("address[]", False, "[Bytes!]"),
        ("uint256[][]", False, "Json"),
        ("fixed128x18", False, "BigDecimal"),
    ],
)
def test_abi_types_map_to_schema_types(abi_type, indexed, expected):
    assert graphql_type(AbiParam("x", abi_type, indexed)) == expected


def test_from_abi_refuses_unknown_events_bad_addresses_and_full_directories(tmp_path):
    abi = SHARED / "abis/WETH9.json"
    with pytest.raises(UserError, match="no event 'Swap'") as failure:
        write_from_abi(tmp_path / "a", abi, events=["Swap"])
    assert "Approval, Deposit, Transfer, Withdrawal" in str(failure.value)
    with pytest.raises(UserError, match="'0x12' is not an address"):
        write_from_abi(tmp_path / "b", abi, address="0x12")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="is not empty"):
        write_from_abi(tmp_path / "c", abi)
    with pytest.raises(AbiError, match="ABI file not found"):
        write_from_abi(tmp_path / "d", tmp_path / "missing.json")


def test_every_template_folder_keeps_its_data_licence():
    for name in ("blank", "uniswap-v2"):
        licence = (TEMPLATES / name / "data" / "LICENSE.md").read_text()
        assert "Apache License 2.0" in licence and "GNU General Public License v3.0" in licence
