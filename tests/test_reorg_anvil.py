"""Reorgs on a real node: anvil forks under a live Indexer, which must roll back.

Each test deploys BenchToken on a fresh anvil, funds four dev accounts with real mints, and
runs the Indexer over JSON-RPC with no end block while the test grows the chain. A fork is
made the way a node really replaces blocks: ``evm_snapshot``, blocks of branch A (indexed),
``evm_revert`` and a longer branch B with other transfers; or ``anvil_reorg``. Afterwards the
tables must hold exactly what the final chain says (``eth_getLogs`` and ``balanceOf`` of every
holder, through ``assert_exact`` of test_rpc_live) and equal, table for table, a fresh index of
the final chain made by a second Indexer with an end block.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import uuid
from pathlib import Path

import pytest

from evmflow.engine import Indexer
from evmflow.reorg import ReorgTooDeep
from tests.conftest import PG_BASE_URL, dump_db, wipe_db
from tests.test_rpc_live import (
    CHAIN_ID,
    assert_exact,
    start,
    stop,
    token,  # noqa: F401 - a fixture: ``funded`` builds on it
    wait_indexed,
    write_rpc_project,
)

pytestmark = pytest.mark.anvil

WINDOW = 20  # max_reorg_depth of the live index: every fork below is inside it
HOLDERS = 4  # dev accounts 1-4 hold tokens and send the transfers
COMPARED = ("Account", "Transfer", "_evmflow_chains")  # what a fresh index must equal


# --- the node ---------------------------------------------------------------------------------


@pytest.fixture()
def funded(token):  # noqa: F811 - test_rpc_live's fixture
    """test_rpc_live's BenchToken on a fresh anvil, with 10**21 minted to dev accounts 1-4."""
    for holder in token.node.accounts[1 : 1 + HOLDERS]:
        token.mint(holder, 10**21)
    return token


def branch_recipient(seed: int) -> str:
    """An address only the branch of ``seed`` pays: orphaned rows of it must disappear."""
    return "0x" + format(0xB4A0C0DE0000 + seed, "040x")


def transfer_txs(erc20, count: int, rng: random.Random, nonces: dict[str, int], seed: int):
    """``count`` prepared real transfers from holders to holders or the branch's recipient.

    Amounts stay far below the 10**21 each holder got, so none reverts on any branch.
    """
    from tests.support.anvil import encode_call

    node = erc20.node
    holders = node.accounts[1 : 1 + HOLDERS]
    txs = []
    for _ in range(count):
        sender = rng.choice(holders)
        receiver = rng.choice([*holders, branch_recipient(seed)])
        data = encode_call("transfer(address,uint256)", receiver, rng.randrange(1, 10**18))
        nonce = nonces[sender] if sender in nonces else node.nonce(sender, "latest")
        nonces[sender] = nonce + 1
        txs.append(node.prepare_tx(erc20.address, data, sender, nonce, 100_000))
    return txs


def mine_branch(erc20, blocks: int, seed: int, per_block: int = 2) -> int:
    """``blocks`` new blocks of ``per_block`` real transfers each (other ones per seed); the
    new head. Checks every transfer succeeded."""
    node = erc20.node
    rng = random.Random(seed)
    nonces: dict[str, int] = {}
    hashes: list[str] = []
    with node.manual_mining():
        for _ in range(blocks):
            hashes += node.send_many(transfer_txs(erc20, per_block, rng, nonces, seed))
            node.mine()
    receipts = node.batch([("eth_getTransactionReceipt", [h]) for h in hashes])
    assert all(r is not None and r["status"] == "0x1" for r in receipts), receipts
    return node.block_number()


async def grow(erc20, blocks: int, seed: int, per_block: int = 2) -> int:
    return await asyncio.to_thread(mine_branch, erc20, blocks, seed, per_block)


# --- projects and databases -------------------------------------------------------------------


def write_project(root: Path, erc20, depth: int, end_block: int | None = None) -> Path:
    """test_rpc_live's project (Transfer rows, Account balances) with our window and end."""
    write_rpc_project(root, erc20.node.url, erc20.address)
    config_file = root / "evmflow.yaml"
    config = json.loads(config_file.read_text())
    chain = config["chains"][0]
    chain["max_reorg_depth"] = depth
    if end_block is not None:
        chain["end_block"] = end_block
    config_file.write_text(json.dumps(config, indent=2))
    return root


@pytest.fixture()
def new_db(tmp_path):
    """``new_db(backend, name)``: a fresh SQLite file or PostgreSQL schema (dropped after)."""
    made: list[str] = []

    def make(backend: str, name: str) -> str:
        if backend == "sqlite":
            url = f"sqlite:///{tmp_path / name / 'index.db'}"
        else:
            url = f"{PG_BASE_URL}?schema=reorg_anvil_{uuid.uuid4().hex[:12]}"
        made.append(url)
        return url

    yield make
    for url in made:
        if not url.startswith("sqlite"):
            wipe_db(url)


async def committed(indexer: Indexer, task: asyncio.Task, block: int) -> None:
    """Until ``block`` is handled and every queued batch is in the database."""
    await wait_indexed(indexer, task, block)
    while indexer.writer is None or indexer.writer.queue:
        assert not task.done()
        await asyncio.sleep(0.01)


async def assert_equals_fresh_index(erc20, tmp_path: Path, live_db: str, fresh_db: str) -> None:
    """A second Indexer, on a fresh database and with an end block at the head, must build
    the same tables as the live one that went through the reorg."""
    head = erc20.node.block_number()
    project = write_project(tmp_path / "fresh", erc20, WINDOW, end_block=head)
    fresh = Indexer(project, fresh_db)
    await asyncio.wait_for(fresh.run(), 60)
    assert fresh.finished
    assert fresh.measures.rollbacks == 0
    live = await asyncio.to_thread(dump_db, live_db)
    again = await asyncio.to_thread(dump_db, fresh_db)
    for table in COMPARED:
        assert live[table] == again[table], table


def rollback_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "rolled back" in r.getMessage()]


async def following(erc20, project_dir: Path, db: str, depth: int, blocks: int, seed: int):
    """``blocks`` blocks of transfers, then a live Indexer that has committed them all;
    (project, indexer, its task, the head)."""
    head = await grow(erc20, blocks, seed=seed)
    project = write_project(project_dir, erc20, depth)
    indexer, task = start(project, db)
    await committed(indexer, task, head)
    return project, indexer, task, head


async def branch_a(erc20, indexer: Indexer, task: asyncio.Task, blocks: int, seed: int) -> str:
    """Snapshot, then ``blocks`` blocks of transfers the indexer commits: the branch a revert
    to the returned snapshot orphans."""
    snapshot = await asyncio.to_thread(erc20.node.snapshot)
    await committed(indexer, task, await grow(erc20, blocks, seed=seed))
    return snapshot


async def revert(erc20, snapshot: str) -> int:
    """Back to the snapshot's head (returned); the next blocks mined make branch B."""
    assert await asyncio.to_thread(erc20.node.revert, snapshot)
    return await asyncio.to_thread(erc20.node.block_number)


async def finish_on_branch_b(
    erc20,
    indexer: Indexer,
    task: asyncio.Task,
    blocks: int,
    seed: int,
    databases: tuple[str, str],
    tmp_path: Path,
) -> int:
    """Mine branch B, let the indexer commit it, stop it; then one rollback must have made
    its tables equal the final chain and a fresh index of it. Returns B's head."""
    head = await grow(erc20, blocks, seed=seed)
    await committed(indexer, task, head)
    await stop(indexer, task)
    assert (indexer.measures.reorgs, indexer.measures.rollbacks) == (1, 1)
    db, fresh_db = databases
    await assert_exact(erc20, db, head)
    await assert_equals_fresh_index(erc20, tmp_path, db, fresh_db)
    return head


# --- tests ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("depth", "backend"),
    [
        (1, "sqlite"),
        (3, "sqlite"),
        (8, "sqlite"),
        pytest.param(3, "postgres", marks=pytest.mark.postgres, id="3-postgres"),
    ],
)
async def test_revert_to_snapshot_and_longer_branch_rolls_back_to_the_common_block(
    funded, tmp_path, new_db, caplog, depth, backend
):
    caplog.set_level(logging.INFO, logger="evmflow.engine")
    db = new_db(backend, "live")
    _, indexer, task, common = await following(funded, tmp_path / "live", db, WINDOW, 3, 1)
    snapshot = await branch_a(funded, indexer, task, depth, seed=2)
    assert await revert(funded, snapshot) == common
    databases = (db, new_db(backend, "fresh"))
    await finish_on_branch_b(funded, indexer, task, depth + 2, 3, databases, tmp_path)
    [line] = rollback_lines(caplog)
    assert f"to block {common} " in line, line


async def test_two_reorgs_in_a_row_each_roll_back(funded, tmp_path, new_db):
    db = new_db("sqlite", "live")
    _, indexer, task, head = await following(funded, tmp_path / "live", db, WINDOW, 2, 4)
    for round_ in range(2):
        await revert(funded, await branch_a(funded, indexer, task, 2, seed=10 + round_))
        head = await grow(funded, 4, seed=20 + round_)
        await committed(indexer, task, head)
    await stop(indexer, task)

    assert indexer.measures.rollbacks == 2
    await assert_exact(funded, db, head)
    await assert_equals_fresh_index(funded, tmp_path, db, new_db("sqlite", "fresh"))


async def test_anvil_reorg_of_the_last_blocks_rolls_back(funded, tmp_path, new_db, caplog):
    from tests.support.anvil import RpcError

    caplog.set_level(logging.INFO, logger="evmflow.engine")
    node = funded.node
    db = new_db("sqlite", "live")
    _, indexer, task, before = await following(funded, tmp_path / "live", db, WINDOW, 6, 5)

    # anvil_reorg(depth, [(tx, block offset)]): the last 3 blocks are mined again, holding
    # only these transfers, so the chain keeps its height and changes its last 3 hashes.
    last_three = range(before - 2, before + 1)
    replaced = {n: (await asyncio.to_thread(node.get_block, n))["hash"] for n in last_three}
    rng = random.Random(6)
    txs = [
        transfer_txs(funded, 1, rng, {}, seed=6)[0] | {"from": node.accounts[1 + i]}
        for i in range(3)
    ]
    for tx in txs:
        del tx["nonce"]  # anvil fills in the nonce at the fork
    try:
        await asyncio.to_thread(node.rpc, "anvil_reorg", [3, [[tx, i] for i, tx in enumerate(txs)]])
    except RpcError as exc:
        pytest.skip(f"this anvil has no usable anvil_reorg: {exc}")
    assert await asyncio.to_thread(node.block_number) == before
    for number, old in replaced.items():
        assert (await asyncio.to_thread(node.get_block, number))["hash"] != old
    head = await grow(funded, 1, seed=7)  # the next block shows the fork
    await committed(indexer, task, head)
    await stop(indexer, task)

    assert indexer.measures.rollbacks == 1
    [line] = rollback_lines(caplog)
    assert f"to block {before - 3}" in line, line
    await assert_exact(funded, db, head)
    await assert_equals_fresh_index(funded, tmp_path, db, new_db("sqlite", "fresh"))


@pytest.mark.parametrize(("window", "orphaned"), [(3, 10), (4, 5)], ids=["far", "one-more"])
async def test_reorg_deeper_than_the_window_stops_and_changes_nothing(
    funded, tmp_path, new_db, window, orphaned
):
    db = new_db("sqlite", "live")
    _, indexer, task, _ = await following(funded, tmp_path / "live", db, window, 2, 8)
    snapshot = await branch_a(funded, indexer, task, orphaned, seed=9)
    before = await asyncio.to_thread(dump_db, db)
    await revert(funded, snapshot)
    await grow(funded, orphaned + 2, seed=10)

    with pytest.raises(ReorgTooDeep) as failure:
        await asyncio.wait_for(task, 60)
    message = str(failure.value)
    assert f"chain {CHAIN_ID}" in message
    assert f"max_reorg_depth {window}" in message
    assert "Nothing was rolled back" in message and "--reset" in message
    assert indexer.measures.rollbacks == 0
    assert await asyncio.to_thread(dump_db, db) == before


async def test_fork_exactly_as_deep_as_the_window_still_rolls_back(funded, tmp_path, new_db):
    # max_reorg_depth 4 and 4 orphaned blocks: the common block is the window's floor, the
    # oldest block whose hash evmflow keeps.
    db = new_db("sqlite", "live")
    _, indexer, task, _ = await following(funded, tmp_path / "live", db, 4, 2, 11)
    await revert(funded, await branch_a(funded, indexer, task, 4, seed=12))
    databases = (db, new_db("sqlite", "fresh"))
    await finish_on_branch_b(funded, indexer, task, 6, 13, databases, tmp_path)


async def test_reorg_while_the_indexer_was_stopped_is_rolled_back_on_restart(
    funded, tmp_path, new_db
):
    db = new_db("sqlite", "live")
    project, indexer, task, _ = await following(funded, tmp_path / "live", db, WINDOW, 3, 14)
    # The indexer stops at the end of branch A; while none runs, the node replaces A by B,
    # so only the hashes stored with the index can tell.
    snapshot = await branch_a(funded, indexer, task, 3, seed=15)
    await stop(indexer, task)
    await revert(funded, snapshot)
    head = await grow(funded, 5, seed=16)
    restarted, task = start(project, db)
    await committed(restarted, task, head)
    await stop(restarted, task)

    assert restarted.measures.rollbacks == 1
    await assert_exact(funded, db, head)
    await assert_equals_fresh_index(funded, tmp_path, db, new_db("sqlite", "fresh"))


async def test_reorg_during_a_slow_backfill_with_pages_buffered_from_the_old_branch(
    funded, tmp_path, new_db
):
    # Commits are held and little may stay uncommitted, so the indexer crawls while its
    # fetcher has pages of branch A buffered; the node replaces A under it.
    db = new_db("sqlite", "live")
    common = await grow(funded, 4, seed=17)
    snapshot = await asyncio.to_thread(funded.node.snapshot)
    await grow(funded, 30, seed=18)

    held = True

    async def slow_commit(commit):
        if held:
            await asyncio.sleep(0.05)

    project = write_project(tmp_path / "live", funded, depth=64)
    indexer = Indexer(project, db, batch_size=4, max_uncommitted=8, before_commit=slow_commit)
    task = asyncio.create_task(indexer.run())
    await wait_indexed(indexer, task, common + 3)
    chain = indexer.chains[CHAIN_ID]
    while not chain.pages.full():  # the fetcher's buffer of pages, all of branch A
        assert not task.done()
        await asyncio.sleep(0.01)
    assert chain.progress.block < common + 30, "the backfill went too fast"
    assert await revert(funded, snapshot) == common
    held = False
    databases = (db, new_db("sqlite", "fresh"))
    await finish_on_branch_b(funded, indexer, task, 34, 19, databases, tmp_path)
