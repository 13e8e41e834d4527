"""The whole indexer over JSON-RPC against a real anvil node: backfill, then follow the head.

Each test deploys BenchToken on a fresh anvil, makes real transfers (with balances), runs the
Indexer with no end block in a task and grows the chain while it runs. The expected tables
come from the chain itself: the Transfer rows from anvil's own ``eth_getLogs``, the balances
from ``balanceOf`` of every holder, never from evmflow's code.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from pathlib import Path

import pytest

from evmflow.engine import Indexer
from tests.conftest import REPO_ROOT, as_int, chain_progress, dump_db

pytestmark = pytest.mark.anvil

CHAIN_ID = 31337
ZERO = "0x" + "00" * 20
WAIT_LIMIT = 60.0  # seconds before a wait is declared hung (a guard, not a measure)

SCHEMA = """
type Transfer @entity {
  id: ID!
  transaction: Bytes!
  block: Int!
  from: Bytes!
  to: Bytes!
  value: BigInt!
}

type Account @entity {
  id: ID!
  balance: BigInt!
  transfers: Int!
}
"""

# The sender is written back before the receiver is read, so a transfer to oneself (which
# real_transfers makes) nets to zero like on chain.
HANDLERS = """
from evmflow.contracts import ERC20
from evmflow.entities import Account, Transfer


async def _account(context, holder):
    found = await context.Account.get(holder)
    return found if found is not None else Account(id=holder, balance=0, transfers=0)


@ERC20.Transfer.handler
async def on_transfer(event, context):
    p = event.params
    sender = await _account(context, p.from_)
    sender.balance -= p.value
    sender.transfers += 1
    context.Account.set(sender)
    receiver = await _account(context, p.to)
    receiver.balance += p.value
    receiver.transfers += 1
    context.Account.set(receiver)
    context.Transfer.set(
        Transfer(
            id=f"{event.block_number}-{event.log_index}",
            transaction=event.transaction_hash,
            block=event.block_number,
            from_=p.from_,
            to=p.to,
            value=p.value,
        )
    )
"""


def write_rpc_project(root: Path, url: str, token: str) -> Path:
    """A project following ``token``'s Transfers on ``url`` from block 0, with no end."""
    root.mkdir(parents=True, exist_ok=True)
    abi = REPO_ROOT / "examples" / "erc20-mainnet" / "abis" / "ERC20.json"
    (root / "abi.json").write_text(abi.read_text())
    (root / "schema.graphql").write_text(SCHEMA)
    (root / "handlers.py").write_text(HANDLERS)
    rpc = {
        "urls": [url],
        "poll_interval": 0.05,
        "request_timeout": 1.0,
        # Small ranges so the backfill takes several pages and batches.
        "max_block_range": 7,
        "concurrency": 3,
    }
    config = {
        "name": "rpc-live",
        "engine": {"batch_size": 40},
        "chains": [{"id": CHAIN_ID, "start_block": 0, "rpc": rpc}],
        "contracts": [
            {"name": "ERC20", "abi": "abi.json", "address": token, "events": ["Transfer"]}
        ],
    }
    (root / "evmflow.yaml").write_text(json.dumps(config, indent=2))
    return root


@pytest.fixture()
def token():
    from tests.support.anvil import Anvil, AnvilNotFound, BenchToken

    try:
        node = Anvil(chain_id=CHAIN_ID)
    except AnvilNotFound as exc:
        pytest.skip(str(exc))
    with node:
        yield BenchToken.deploy(node)


# --- running and waiting ------------------------------------------------------------------------


def start(project: Path, db: str, sources: dict | None = None) -> tuple[Indexer, asyncio.Task]:
    indexer = Indexer(project, db, sources=sources)
    return indexer, asyncio.create_task(indexer.run(), name="indexer under test")


async def wait_indexed(indexer: Indexer, task: asyncio.Task, block: int) -> None:
    """Until the indexer has handled every block up to ``block``; fails if it ended."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_LIMIT
    while True:
        if task.done():
            task.result()  # raises what stopped it
            pytest.fail(f"the indexer ended on its own before block {block}")
        chain = indexer.chains.get(CHAIN_ID)
        if chain is not None and chain.progress.block >= block:
            return
        if loop.time() > deadline:
            at = None if chain is None else chain.progress.block
            pytest.fail(f"not at block {block} after {WAIT_LIMIT}s (at {at})")
        await asyncio.sleep(0.02)


async def stop(indexer: Indexer, task: asyncio.Task) -> None:
    indexer.stop()
    await asyncio.wait_for(task, WAIT_LIMIT)
    assert not indexer.finished  # no end block: stopping is the only way out


async def grow(token, transfers: int, seed: int) -> int:
    """``transfers`` real transfers (plus five mints), one transaction a block; the head."""
    from tests.support.anvil import real_transfers

    def work() -> int:
        real_transfers(token, transfers, seed=seed, per_block=1)
        return token.node.block_number()

    return await asyncio.to_thread(work)


def transport_failures(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The source's debug lines about failed exchanges with the node."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "evmflow.sources.rpc" and "failed (" in r.getMessage()
    ]


# --- what the tables must hold, from the chain --------------------------------------------------


async def assert_exact(token, db: str, head: int) -> None:
    """Transfer rows = anvil's eth_getLogs up to ``head``; balances = balanceOf at ``head``."""
    from tests.support.anvil import TRANSFER_TOPIC

    node = token.node
    logs = node.get_logs(0, head, address=token.address, topics=[[TRANSFER_TOPIC]])
    expected_transfers = {}
    counts: dict[str, int] = {}
    for log in logs:
        block = int(log["blockNumber"], 16)
        sender = "0x" + log["topics"][1][-40:]
        receiver = "0x" + log["topics"][2][-40:]
        row_id = f"{block}-{int(log['logIndex'], 16)}"
        expected_transfers[row_id] = (
            row_id,
            log["transactionHash"].lower(),
            block,
            sender,
            receiver,
            int(log["data"], 16),
        )
        counts[sender] = counts.get(sender, 0) + 1
        counts[receiver] = counts.get(receiver, 0) + 1
    expected_accounts = {}
    for holder, n in counts.items():
        # Mints come from the zero address: its balance is minus the supply.
        if holder == ZERO:
            balance = -token.total_supply(head)
        else:
            balance = token.balance_of(holder, head)
        expected_accounts[holder] = (holder, balance, n)

    dump = await asyncio.to_thread(dump_db, db)  # dump_db runs its own event loop
    transfers = [(*r[:5], as_int(r[5])) for r in dump["Transfer"]]
    assert len(transfers) == len(logs)
    assert {r[0]: r for r in transfers} == expected_transfers
    accounts = {r[0]: (r[0], as_int(r[1]), r[2]) for r in dump["Account"]}
    assert accounts == expected_accounts
    committed_block, events = chain_progress(dump)[CHAIN_ID]
    assert committed_block >= head
    assert events == len(logs)


# --- tests --------------------------------------------------------------------------------------


async def test_backfill_then_live_indexes_every_transfer_once(token, db_url, tmp_path):
    from tests.support.anvil import real_transfers

    node = token.node
    real_transfers(token, 60, seed=1, per_block=4)  # the backfill: 65 logs in 17 blocks
    backfill_head = node.block_number()
    project = write_rpc_project(tmp_path / "project", node.url, token.address)

    indexer, task = start(project, db_url)
    await wait_indexed(indexer, task, backfill_head)
    head = await grow(token, 45, seed=2)  # live: 50 more blocks, one transfer each
    assert head == backfill_head + 50
    await wait_indexed(indexer, task, head)
    await stop(indexer, task)

    await assert_exact(token, db_url, head)
    # The source counts what the metrics endpoint reports: every request, none failed.
    stats = next(iter(indexer.chains.values())).source.stats
    assert stats.requests >= 10 and stats.errors == 0 and stats.request_seconds > 0


async def backfilled(
    token, tmp_path: Path, db: str, transfers: int, seed: int, sources: dict | None = None
):
    """Grow the chain, start an indexer on it, wait until it has the backfill."""
    backfill_head = await grow(token, transfers, seed=seed)
    project = write_rpc_project(tmp_path / "project", token.node.url, token.address)
    indexer, task = start(project, db, sources)
    await wait_indexed(indexer, task, backfill_head)
    return project, indexer, task


async def test_node_paused_mid_run_the_indexer_waits_and_resumes(token, tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="evmflow.sources.rpc")
    db = f"sqlite:///{tmp_path / 'index.db'}"
    _, indexer, task = await backfilled(token, tmp_path, db, 20, seed=3)
    # SIGSTOP: connections still open (the kernel accepts them) but nothing answers, so every
    # request runs into the 1 s request timeout; longer than several timeouts in a row.
    process = token.node._process
    assert process is not None
    process.send_signal(signal.SIGSTOP)
    try:
        await asyncio.sleep(3.5)
        assert not task.done(), "the indexer gave up while the node was paused"
    finally:
        process.send_signal(signal.SIGCONT)
    assert transport_failures(caplog), "the pause went unnoticed: no request failed"
    head = await grow(token, 15, seed=4)
    await wait_indexed(indexer, task, head)
    await stop(indexer, task)

    await assert_exact(token, db, head)


def short_retry_budget(url: str) -> dict:
    """An RpcSource that gives up on a dead node after three quick tries (well under 1 s)."""
    from evmflow.sources.rpc import RpcSource

    source = RpcSource(
        CHAIN_ID,
        [url],
        max_block_range=7,
        concurrency=3,
        poll_interval=0.05,
        request_timeout=0.5,
        max_retries=2,
        backoff_base=0.01,
        backoff_max=0.05,
        recover_after=0.05,
    )
    return {CHAIN_ID: source}


@pytest.mark.parametrize(
    "retries",
    [
        "configured",
        # A retry budget far shorter than the outage: following the head never gives up.
        "short budget",
    ],
)
async def test_node_killed_and_restarted_on_its_port_the_indexer_resumes(
    token, tmp_path, caplog, retries
):
    from tests.support.anvil import Anvil, BenchToken

    caplog.set_level(logging.DEBUG, logger="evmflow.sources.rpc")
    db = f"sqlite:///{tmp_path / 'index.db'}"
    sources = short_retry_budget(token.node.url) if retries == "short budget" else None
    _, indexer, task = await backfilled(token, tmp_path, db, 10, seed=5, sources=sources)
    # Take the chain out (connections refused), then bring the same chain back on the same
    # port from a dump of its state.
    node = token.node
    dumped = await asyncio.to_thread(node.rpc, "anvil_dumpState")
    port = node.port
    await asyncio.to_thread(node.stop)
    await asyncio.sleep(1.5)
    if task.done():
        task.result()  # what stopped it
    assert not task.done(), "the indexer gave up while the node was down"
    assert transport_failures(caplog), "the outage went unnoticed: no request failed"
    revived = Anvil(chain_id=CHAIN_ID)
    await asyncio.to_thread(revived._start_once, port)
    try:
        await asyncio.to_thread(revived.rpc, "anvil_loadState", [dumped])
        revived_token = BenchToken(revived, token.address)
        head = await grow(revived_token, 15, seed=6)
        await wait_indexed(indexer, task, head)
        await stop(indexer, task)
        await assert_exact(revived_token, db, head)
    finally:
        revived.stop()
        if not task.done():
            await stop(indexer, task)


async def test_restarted_indexer_resumes_without_duplicates(token, tmp_path):
    db = f"sqlite:///{tmp_path / 'index.db'}"
    project, indexer, task = await backfilled(token, tmp_path, db, 25, seed=7)
    first_head = indexer.chains[CHAIN_ID].progress.block
    grown = asyncio.create_task(grow(token, 30, seed=8))
    # Stop while the chain grows: the first run ends somewhere inside the live blocks.
    await wait_indexed(indexer, task, first_head + 3)
    await stop(indexer, task)
    await grown
    head = await grow(token, 10, seed=9)  # and more while no indexer runs
    stopped_at = chain_progress(await asyncio.to_thread(dump_db, db))[CHAIN_ID][0]
    assert first_head <= stopped_at < head

    indexer, task = start(project, db)
    await wait_indexed(indexer, task, head)
    await stop(indexer, task)

    await assert_exact(token, db, head)
