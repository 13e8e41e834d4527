"""``evmflow run`` over JSON-RPC against a real anvil node, checked against the chain itself.

Two BenchTokens get real mints and a few hundred real transfers between several accounts over
many blocks (with stretches of empty blocks between), and a third token, not in the project,
gets transfers that must be ignored. The project indexes the two tokens' Transfer events with
the example's handlers from block 0, so every Account balance must equal the token's own
``balanceOf`` (by eth_call) and the zero address's balance must be minus the total supply.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import (
    EXAMPLE_DIR,
    TRANSFER_TOPIC,
    assert_ran,
    chain_progress,
    dump_db,
    erc20_index_in_db,
    run_evmflow,
)
from tests.support.anvil import Anvil, AnvilNotFound, BenchToken, real_transfers

pytestmark = pytest.mark.anvil

CHAIN_ID = 31337
ZERO = "0x" + "0" * 40


@dataclass
class Chain:
    node: Anvil
    tokens: list[BenchToken]  # indexed
    other: BenchToken  # not indexed
    holders: list[str]
    end_block: int


@pytest.fixture(scope="module")
def chain() -> Chain:
    try:
        node = Anvil(chain_id=CHAIN_ID)
    except AnvilNotFound as exc:
        pytest.skip(str(exc))
    with node:
        holders = node.accounts[:8]
        first, second, other = (BenchToken.deploy(node) for _ in range(3))
        real_transfers(first, 200, seed=11, holders=holders, per_block=3)
        node.mine(40)
        real_transfers(other, 30, seed=12, holders=holders, per_block=4)
        real_transfers(second, 120, seed=13, holders=holders[2:], per_block=2)
        node.mine(25)
        real_transfers(first, 60, seed=14, holders=holders[:4], per_block=5)
        yield Chain(node, [first, second], other, holders, node.block_number())


@pytest.fixture()
def rpc_project(tmp_path: Path, chain: Chain) -> Path:
    root = tmp_path / "anvil-erc20"
    (root / "abis").mkdir(parents=True)
    for name in ("schema.graphql", "handlers.py", "abis/ERC20.json"):
        shutil.copyfile(EXAMPLE_DIR / name, root / name)
    addresses = ", ".join(t.address for t in chain.tokens)
    (root / "evmflow.yaml").write_text(
        f"""name: anvil-erc20
chains:
  - id: {CHAIN_ID}
    start_block: 0
    end_block: {chain.end_block}
    rpc:
      urls: [{chain.node.url}]
      max_block_range: 16
contracts:
  - name: ERC20
    abi: abis/ERC20.json
    address: [{addresses}]
    events: [Transfer]
"""
    )
    return root


def _chain_transfers(chain: Chain, token: BenchToken) -> list[tuple[str, str, int]]:
    """(from, to, value) of every Transfer log of a token, read from the node."""
    logs = chain.node.get_logs(0, chain.end_block, token.address, [TRANSFER_TOPIC])
    return [
        ("0x" + x["topics"][1][-40:], "0x" + x["topics"][2][-40:], int(x["data"], 16)) for x in logs
    ]


def test_every_balance_equals_the_tokens_own_balance_of(
    rpc_project: Path, chain: Chain, db_url: str
):
    result = run_evmflow("run", rpc_project, "--db", db_url)

    assert_ran(result)
    dump = dump_db(db_url)
    index = erc20_index_in_db(dump)
    for token in chain.tokens:
        for holder in chain.holders:
            account = index.accounts.get(f"{token.address}-{holder}")
            stored = account[3] if account else 0
            assert stored == token.balance_of(holder), (token.address, holder)
        assert index.accounts[f"{token.address}-{ZERO}"][3] == -token.total_supply()

        transfers = _chain_transfers(chain, token)
        assert index.tokens[token.address] == (
            token.address,
            len(transfers),
            sum(value for _, _, value in transfers),
        )
    assert chain.other.address not in index.tokens
    assert not [a for a in index.accounts.values() if a[1] == chain.other.address]
    total = sum(len(_chain_transfers(chain, t)) for t in chain.tokens)
    assert total == (8 + 200) + (4 + 60) + (6 + 120)  # mints and transfers the fixture made
    assert len(index.transfers) == total
    assert chain_progress(dump) == {CHAIN_ID: (chain.end_block, total)}


def test_second_run_over_rpc_changes_nothing(rpc_project: Path, chain: Chain, db_url: str):
    assert_ran(run_evmflow("run", rpc_project, "--db", db_url))
    before = dump_db(db_url)

    again = run_evmflow("run", rpc_project, "--db", db_url)

    assert_ran(again)
    assert "0 events in" in again.stderr
    assert dump_db(db_url) == before
