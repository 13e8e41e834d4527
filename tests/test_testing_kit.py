"""evmflow.testing: the bundled example's real handlers run on made-up events."""

from __future__ import annotations

import gzip
import json
import shutil
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import eth_abi
import pytest

from evmflow.abi import EventAbi, events_from_abi
from evmflow.errors import HandlerFailed
from evmflow.project import load_project
from evmflow.testing import EventParamError, TestIndexer, TestingError, indexed_topic
from evmflow.testing._encode import encode_log

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "erc20-mainnet"
ALICE = "0x" + "a1" * 20
BOB = "0x" + "b2" * 20
TOKEN = "0x" + "c3" * 20


@pytest.fixture(scope="module")
def kit():
    with TestIndexer(EXAMPLE) as kit:
        yield kit


@pytest.fixture()
def fresh_kit():
    with TestIndexer(EXAMPLE) as kit:
        yield kit


def test_event_gets_the_start_block_and_mainnet_rhythm_timestamps_by_default(fresh_kit):
    first = fresh_kit.event("ERC20", "Transfer", from_=ALICE, to=BOB, value=1, address=TOKEN)
    second = fresh_kit.event("ERC20", "Transfer", from_=ALICE, to=BOB, value=2, address=TOKEN)
    later = fresh_kit.event(
        "ERC20", "Transfer", from_=ALICE, to=BOB, value=3, address=TOKEN, block=17686120
    )

    assert (first.block_number, first.log_index, first.transaction_index) == (17686110, 0, 0)
    assert (second.block_number, second.log_index) == (17686110, 1)
    assert (later.block_number, later.log_index) == (17686120, 0)
    assert first.block_timestamp == 1_438_269_973 + 12 * 17686110
    assert later.block_timestamp - first.block_timestamp == 120
    assert first.block_hash == second.block_hash != later.block_hash
    assert first.transaction_hash != second.transaction_hash
    assert first.chain_id == 1 and first.contract == "ERC20" and first.name == "Transfer"


def test_event_params_are_what_the_decoder_gives_for_the_real_log():
    with gzip.open(EXAMPLE / "data" / "firehose-17686110.logs.jsonl.gz", "rt") as lines:
        raw = json.loads(next(line for line in lines if "ddf252ad" in line))
    project = load_project(EXAMPLE)
    decoder = project.bindings[0].decoder
    real = decoder.decode(raw["topics"], raw["data"])
    sender = "0x" + raw["topics"][1][-40:]
    receiver = "0x" + raw["topics"][2][-40:]
    value = int(raw["data"], 16)

    topics, data = encode_log(decoder.event, [sender, receiver, value], ["from", "to", "value"])

    assert (topics, data) == (raw["topics"], raw["data"])
    with TestIndexer(project) as kit:
        made = kit.event(
            "ERC20",
            "Transfer",
            from_=sender.upper().replace("0X", "0x"),
            to=receiver,
            value=value,
            address=raw["address"],
        )
    assert made.params == real
    assert made.params.from_ == "0x75e89d5979e4f6fba9f97c104c2f0afb3f1dcb88"


def test_encoding_of_every_kind_of_type_matches_eth_abi():
    abi = [
        {
            "type": "event",
            "name": "Mixed",
            "anonymous": False,
            "inputs": [
                {"name": "who", "type": "address", "indexed": True},
                {"name": "delta", "type": "int16", "indexed": True},
                {"name": "flag", "type": "bool", "indexed": False},
                {"name": "memo", "type": "string", "indexed": False},
                {"name": "blob", "type": "bytes", "indexed": False},
                {"name": "amounts", "type": "uint256[]", "indexed": False},
                {"name": "tag", "type": "bytes3", "indexed": False},
                {"name": "price", "type": "ufixed128x18", "indexed": False},
                {
                    "name": "pair",
                    "type": "tuple",
                    "indexed": False,
                    "components": [
                        {"name": "owner", "type": "address"},
                        {"name": "names", "type": "string[2]"},
                    ],
                },
            ],
        }
    ]
    event: EventAbi = events_from_abi(abi)[0]
    values = [
        ALICE,
        -7,
        True,
        "héllo",
        b"\x01\x02\x03",
        [1, 2**200, 0],
        b"abc",
        Decimal("1.5"),
        (BOB, ["x", "yz"]),
    ]

    topics, data = encode_log(event, values, [p.name for p in event.inputs])

    expected = eth_abi.encode(
        ["bool", "string", "bytes", "uint256[]", "bytes3", "ufixed128x18", "(address,string[2])"],
        values[2:],
    )
    assert data == "0x" + expected.hex()
    assert topics[1] == "0x" + eth_abi.encode(["address"], [ALICE]).hex()
    assert topics[2] == "0x" + eth_abi.encode(["int16"], [-7]).hex()


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"from_": ALICE, "to": BOB, "value": -1},
            "Transfer.value (uint256) expects an int from 0 to 2**256-1",
        ),
        (
            {"from_": "0x1234", "to": BOB, "value": 1},
            "Transfer.from_ (address) expects a 0x-prefixed 20-byte hex str, got str '0x1234'",
        ),
        (
            {"from_": ALICE, "to": BOB, "value": "5"},
            "Transfer.value (uint256) expects an int, got str '5'",
        ),
    ],
)
def test_a_value_its_abi_type_cannot_hold_is_refused(kit, params, message):
    message = message.replace("2**256-1", str(2**256 - 1))
    with pytest.raises(EventParamError) as failure:
        kit.event("ERC20", "Transfer", **params)
    assert message in str(failure.value)


def test_missing_unknown_and_misplaced_names_are_refused_with_the_fix(kit):
    with pytest.raises(TestingError, match="needs a value for value"):
        kit.event("ERC20", "Transfer", from_=ALICE, to=BOB)
    with pytest.raises(TestingError, match="has no parameter 'amount'"):
        kit.event("ERC20", "Transfer", from_=ALICE, to=BOB, value=1, amount=2)
    with pytest.raises(TestingError, match="declares no contract 'WETH'"):
        kit.event("WETH", "Deposit")
    with pytest.raises(TestingError, match="indexes no event 'Approval'"):
        kit.event("ERC20", "Approval")
    with pytest.raises(TestingError, match=r"blocks 17686110 to 17686312\)"):
        kit.event("ERC20", "Transfer", from_=ALICE, to=BOB, value=1, block=17686000)


def test_indexed_topic_is_the_keccak_of_the_utf8_text():
    # keccak256("") is the well-known empty hash.
    assert indexed_topic("") == (
        "0xc5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
    )


def test_transfers_update_token_and_accounts_exactly(fresh_kit):
    kit = fresh_kit
    mint = kit.event(
        "ERC20", "Transfer", from_="0x" + "00" * 20, to=ALICE, value=100, address=TOKEN
    )
    pay = kit.event(
        "ERC20", "Transfer", from_=ALICE, to=BOB, value=30, address=TOKEN, block=17686111
    )

    kit.run(mint, pay)

    token = kit.get("Token", TOKEN)
    assert (token.transfers, token.volume) == (2, 130)
    balances = {a.holder: (a.balance, a.transfers) for a in kit.all("Account")}
    assert balances == {"0x" + "00" * 20: (-100, 1), ALICE: (70, 2), BOB: (30, 1)}
    transfer = kit.get("Transfer", "1-17686111-0")
    assert transfer.to_dict() == {
        "id": "1-17686111-0",
        "token": TOKEN,
        "from": ALICE,
        "to": BOB,
        "value": 30,
        "block": 17686111,
        "timestamp": datetime.fromtimestamp(1_438_269_973 + 12 * 17686111, UTC),
        "transaction": pay.transaction_hash,
    }
    assert kit.get("Account", "nobody") is None


def test_changes_list_each_events_writes_with_before_and_after(fresh_kit):
    kit = fresh_kit
    first = kit.event("ERC20", "Transfer", from_=ALICE, to=BOB, value=5, address=TOKEN)
    second = kit.event("ERC20", "Transfer", from_=BOB, to=ALICE, value=2, address=TOKEN)
    kit.run(first)
    kit.run(second)  # a later batch: "before" now comes from the database

    def amount(entity):
        return (
            entity.volume
            if entity.to_dict().keys() == {"id", "transfers", "volume"}
            else entity.balance
        )

    summary = [
        (c.entity, c.id, amount(c.before), amount(c.after))
        for c in kit.changes(second)
        if c.entity != "Transfer"
    ]
    assert summary == [
        ("Token", TOKEN, 5, 7),
        ("Account", f"{TOKEN}-{BOB}", 5, 3),
        ("Account", f"{TOKEN}-{ALICE}", -5, -3),
    ]
    created = [c for c in kit.changes(first) if c.before is None]
    assert [c.entity for c in created] == ["Token", "Account", "Account", "Transfer"]


def test_changes_within_one_batch_start_from_the_previous_event(fresh_kit):
    kit = fresh_kit
    events = [
        kit.event("ERC20", "Transfer", from_=ALICE, to=BOB, value=v, address=TOKEN)
        for v in (1, 2, 4)
    ]
    kit.run(*events)

    token_changes = [
        next(
            (c.before and c.before.volume, c.after.volume)
            for c in kit.changes(e)
            if c.entity == "Token"
        )
        for e in events
    ]
    assert token_changes == [(None, 1), (1, 3), (3, 7)]


def test_seeded_entities_are_the_starting_state(fresh_kit):
    kit = fresh_kit
    Token = kit.classes["Token"]
    assert kit.get("Token", TOKEN) is None  # the store now remembers TOKEN as absent
    kit.set(Token(id=TOKEN, transfers=10, volume=1000))

    kit.run(kit.event("ERC20", "Transfer", from_=ALICE, to=BOB, value=1, address=TOKEN))

    assert kit.get("Token", TOKEN).to_dict() == {"id": TOKEN, "transfers": 11, "volume": 1001}


async def test_process_works_from_an_async_test():
    with TestIndexer(EXAMPLE) as kit:
        event = kit.event("ERC20", "Transfer", from_=ALICE, to=BOB, value=9, address=TOKEN)
        await kit.process(event)
        assert kit.get("Account", f"{TOKEN}-{BOB}").balance == 9


def test_a_failing_handler_raises_and_stores_nothing_of_its_batch(tmp_path):
    project = tmp_path / "project"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns(".evmflow"))
    handlers = (project / "handlers.py").read_text()
    (project / "handlers.py").write_text(
        handlers.replace(
            "    token_address = event.address\n",
            "    token_address = event.address\n"
            "    if event.params.value == 13:\n"
            "        raise ValueError('unlucky')\n",
        )
    )
    with TestIndexer(project) as kit:
        kit.run(kit.event("ERC20", "Transfer", from_=ALICE, to=BOB, value=1, address=TOKEN))
        good = kit.event("ERC20", "Transfer", from_=ALICE, to=BOB, value=2, address=TOKEN)
        bad = kit.event("ERC20", "Transfer", from_=ALICE, to=BOB, value=13, address=TOKEN)

        with pytest.raises(HandlerFailed, match="ValueError: unlucky") as failure:
            kit.run(good, bad)

        assert isinstance(failure.value.__cause__, ValueError)
        assert kit.get("Token", TOKEN).volume == 1
        kit.run(good)
        assert kit.get("Token", TOKEN).volume == 3


@pytest.mark.postgres
def test_the_kit_runs_on_postgresql(pg_url):
    with TestIndexer(EXAMPLE, db=pg_url) as kit:
        kit.run(kit.event("ERC20", "Transfer", from_=ALICE, to=BOB, value=2**200, address=TOKEN))
        assert kit.get("Token", TOKEN).volume == 2**200
