"""The anvil helper of tests/support: a real node, real transactions, real logs."""

from __future__ import annotations

import socket
from collections import Counter

import pytest
from eth_abi import encode as abi_encode

from tests.support.anvil import (
    TRANSFER_TOPIC,
    Anvil,
    AnvilNotFound,
    AnvilStartError,
    BenchToken,
    encode_call,
    find_anvil,
    keccak256,
    pool_address,
    real_transfers,
    spam_transfers,
)

pytestmark = pytest.mark.anvil

ZERO = "0x" + "0" * 40


@pytest.fixture(scope="module")
def node():
    with Anvil(chain_id=1337) as running:
        yield running


@pytest.fixture()
def clean(node):
    """Every test starts from, and goes back to, the same chain."""
    snapshot = node.snapshot()
    yield node
    node.set_automine(True)
    node.revert(snapshot)


def topic_address(topic: str) -> str:
    return "0x" + topic[-40:]


def test_abi_helpers_give_the_well_known_erc20_selectors():
    assert encode_call("transfer(address,uint256)", ZERO, 1)[:10] == "0xa9059cbb"
    assert encode_call("balanceOf(address)", ZERO)[:10] == "0x70a08231"
    assert TRANSFER_TOPIC == "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"


def test_find_anvil_prefers_the_env_variable(monkeypatch, tmp_path):
    real = find_anvil()
    monkeypatch.setenv("EVMFLOW_ANVIL", real)
    assert find_anvil() == real

    missing = tmp_path / "no-anvil"
    monkeypatch.setenv("EVMFLOW_ANVIL", str(missing))
    with pytest.raises(AnvilNotFound, match="no-anvil"):
        find_anvil()


def test_node_answers_with_its_chain_id_and_leaves_nothing_running():
    with Anvil(chain_id=4242) as running:
        assert running.rpc("eth_chainId") == hex(4242)
        assert running.block_number() == 0
        assert len(running.accounts) == 10
        process = running._process
        port = running.port
    assert process is not None and process.poll() is not None
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0


def test_a_node_that_cannot_start_is_an_error_with_anvil_s_own_words(tmp_path):
    with pytest.raises(AnvilStartError, match="no-such-flag"):
        Anvil(extra_args=["--no-such-flag"]).start()
    with pytest.raises(AnvilStartError, match="does not exist"):
        Anvil(load_state=tmp_path / "missing.json").start()


def test_balances_equal_the_sums_of_the_transfer_logs(clean):
    node = clean
    token = BenchToken.deploy(node)
    start = node.block_number() + 1
    hashes = real_transfers(token, 40, seed=7, per_block=8)
    logs = node.get_logs(start, node.block_number(), token.address, [TRANSFER_TOPIC])

    assert len(logs) == len(hashes) == 5 + 40
    balances: Counter[str] = Counter()
    minted = 0
    for log in logs:
        sender, receiver = topic_address(log["topics"][1]), topic_address(log["topics"][2])
        value = int(log["data"], 16)
        if sender == ZERO:
            minted += value
        else:
            balances[sender] -= value
        balances[receiver] += value
    assert minted > 0
    assert token.total_supply() == minted
    for holder in node.accounts[:5]:
        assert token.balance_of(holder) == balances[holder]
    assert sum(balances.values()) == minted


def test_spam_spreads_the_events_over_the_blocks_as_the_contract_defines_them(clean):
    node = clean
    token = BenchToken.deploy(node)
    result = spam_transfers(token, 2_503, 5, seed=3, pool=50, events_per_tx=400)

    assert (result.last_block - result.first_block + 1, result.events) == (5, 2_503)
    assert result.transactions == 5 * 2  # 501 or 500 events a block, at most 400 a transaction
    logs = node.get_logs(result.first_block, result.last_block, token.address)
    per_block = Counter(int(log["blockNumber"], 16) for log in logs)
    blocks = range(result.first_block, result.last_block + 1)
    assert [per_block[b] for b in blocks] == [501, 501, 501, 500, 500]

    # The first log of the run is event 0 of transaction 0, seeded 3 * 2**64 + 0.
    first = logs[0]
    h = int.from_bytes(keccak256(abi_encode(["uint256", "uint256"], [3 * 2**64, 0])), "big")
    assert first["topics"][0] == TRANSFER_TOPIC
    assert topic_address(first["topics"][1]) == pool_address(h % 50)
    assert topic_address(first["topics"][2]) == pool_address((h >> 64) % 50)
    assert int(first["data"], 16) == (h >> 128) % 10**21
    # spam changes no balance.
    assert token.total_supply() == 0


def test_revert_goes_back_to_the_snapshot(clean):
    node = clean
    token = BenchToken.deploy(node)
    snapshot = node.snapshot()
    height = node.block_number()
    token.mint(node.accounts[1], 99)
    node.mine(3)
    assert node.block_number() == height + 4
    assert token.balance_of(node.accounts[1]) == 99

    assert node.revert(snapshot)
    assert node.block_number() == height
    assert token.balance_of(node.accounts[1]) == 0


def test_manual_mining_keeps_transactions_pending_until_mined(clean):
    node = clean
    token = BenchToken.deploy(node)
    height = node.block_number()
    with node.manual_mining():
        assert node.automine() is False
        tx_hash = token.mint(node.accounts[2], 5)
        assert node.receipt(tx_hash) is None
        node.mine()
    assert node.automine() is True
    assert node.block_number() == height + 1
    assert node.receipt(tx_hash)["status"] == "0x1"


def test_dumped_state_loads_back_the_same_blocks_and_logs(tmp_path):
    state = tmp_path / "state.json"
    with Anvil(dump_state=state) as first:
        token = BenchToken.deploy(first)
        spam_transfers(token, 300, 3, seed=9, pool=20)
        real_transfers(token, 5)
        height = first.block_number()
        logs = first.get_logs(0, height)
        hashes = [first.get_block(n)["hash"] for n in range(height + 1)]

    with Anvil(load_state=state) as second:
        assert second.block_number() == height
        assert second.get_logs(0, height) == logs
        assert [second.get_block(n)["hash"] for n in range(height + 1)] == hashes
        assert BenchToken(second, token.address).total_supply() > 0
