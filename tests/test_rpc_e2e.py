"""``evmflow run`` over JSON-RPC against a real anvil node, checked against the chain itself.

Two BenchTokens get real mints and a few hundred real transfers between several accounts over
many blocks (with stretches of empty blocks between), and a third token, not in the project,
gets transfers that must be ignored. The project indexes the two tokens' Transfer events with
the example's handlers from block 0, so every Account balance must equal the token's own
``balanceOf`` (by eth_call) and the zero address's balance must be minus the total supply.
"""

from __future__ import annotations

import json
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
    wipe_db,
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


def _entities_and_progress(dump: dict) -> dict:
    tables = {name: rows for name, rows in dump.items() if not name.startswith(("_", "("))}
    assert set(tables) == {"Account", "Token", "Transfer"}
    return {**tables, "progress": chain_progress(dump)}


def _write_archive(chain: Chain, last: int, folder: Path) -> None:
    """Every log and header of blocks 0..last, as the node returns them."""
    folder.mkdir(parents=True)
    logs = chain.node.get_logs(0, last)
    (folder / "logs.jsonl").write_text("".join(json.dumps(x) + "\n" for x in logs))
    blocks = [chain.node.get_block(n) for n in range(last + 1)]
    (folder / "blocks.jsonl").write_text("".join(json.dumps(b) + "\n" for b in blocks))


@pytest.mark.parametrize("split", ["middle", "past-end"])
def test_an_archive_then_the_node_gives_the_same_index_as_the_node_alone(
    rpc_project: Path, chain: Chain, db_url: str, tmp_path: Path, split: str
):
    assert_ran(run_evmflow("run", rpc_project, "--db", db_url))
    node_alone = _entities_and_progress(dump_db(db_url))
    wipe_db(db_url)

    last = chain.end_block // 2 if split == "middle" else chain.end_block
    _write_archive(chain, last, rpc_project / "archive")
    config = rpc_project / "evmflow.yaml"
    config.write_text(
        config.read_text().replace("    rpc:\n", "    archive: {path: archive}\n    rpc:\n", 1)
    )
    result = run_evmflow("run", rpc_project, "--db", db_url)

    assert_ran(result)
    handover = (
        f"chain {CHAIN_ID}: the archive ends at block {last}; the node serves from {last + 1} on"
    )
    # The node is asked only for blocks past the archive, and only when there are any.
    assert (handover in result.stderr) == (split == "middle"), result.stderr
    # History rows inside the reorg window carry checkpoint ids, which count batches and
    # differ with the pages; the entities and progress must not.
    assert _entities_and_progress(dump_db(db_url)) == node_alone
    index = erc20_index_in_db(dump_db(db_url))
    for token in chain.tokens:
        for holder in chain.holders:
            account = index.accounts.get(f"{token.address}-{holder}")
            assert (account[3] if account else 0) == token.balance_of(holder)
