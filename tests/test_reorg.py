"""Chain reorganisations: after a fork, every table reads as if the orphaned blocks had never
been indexed, and equals a fresh index of the final chain."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict

import pytest

from evmflow.engine import Indexer
from evmflow.reorg import ReorgTooDeep
from evmflow.storage import open_storage
from tests.support import probe
from tests.support.forkable import ForkableChain, ForkableSource, transfer
from tests.support.scripted import write_project

BALANCES_SCHEMA = """
type Account @entity {
  id: ID!
  balance: BigInt!
  transfers: Int!
}

type Transfer @entity {
  id: ID!
  chain: Int!
  value: BigInt!
}
"""

BALANCES_HANDLERS = """
from evmflow.contracts import ERC20
from evmflow.entities import Account, Transfer


async def move(context, holder, delta):
    account = await context.Account.get(holder)
    if account is None:
        account = Account(id=holder, balance=0, transfers=0)
    account.balance += delta
    account.transfers += 1
    context.Account.set(account)


@ERC20.Transfer.handler
async def on_transfer(event, context):
    await move(context, event.params.from_, -event.params.value)
    await move(context, event.params.to, event.params.value)
    context.Transfer.set(
        Transfer(
            id=f"{event.chain_id}-{event.transaction_hash}",
            chain=event.chain_id,
            value=event.params.value,
        )
    )
"""


def logs_of(number: int, branch: str) -> list:
    """Two transfers a block among five holders, different on every branch."""
    salt = sum(branch.encode())
    return [
        transfer(
            number,
            i,
            1 + (number + i + salt) % 5,
            1 + (number * 3 + i + salt) % 5,
            1000 * number + 7 * i + salt,
            branch,
        )
        for i in range(2)
    ]


def expected_tables(chains: dict[int, ForkableChain]) -> dict[str, list[tuple]]:
    """Balances, counts and transfers straight from the final chains' logs."""
    balance: dict[str, int] = defaultdict(int)
    count: dict[str, int] = defaultdict(int)
    transfers = []
    for chain_id, chain in chains.items():
        for log in chain.all_logs():
            sender = "0x" + log.topics[1][26:]
            receiver = "0x" + log.topics[2][26:]
            value = int(log.data, 16)
            balance[sender] -= value
            balance[receiver] += value
            count[sender] += 1
            count[receiver] += 1
            transfers.append((f"{chain_id}-{log.transaction_hash}", chain_id, value))
    return {
        "Account": sorted((h, balance[h], count[h]) for h in balance),
        "Transfer": sorted(transfers),
    }


async def dump(url, project_dir, entities=("Account", "Transfer")):
    from evmflow.project import load_project

    storage = open_storage(url, load_project(project_dir).schema)
    await storage.open()
    try:
        tables = {e: await storage.read_table(e) for e in entities}
        tables["_history_rows"] = await storage.count_history()  # type: ignore[assignment]
        tables["_progress"] = {  # type: ignore[assignment]
            cid: (p.block, p.events) for cid, p in (await storage.read_progress()).items()
        }
        return tables
    finally:
        await storage.close()


async def wait_for_block(indexer: Indexer, block: int, chain_id: int = 1) -> None:
    async def reached():
        while True:
            chain = indexer.chains.get(chain_id)
            if chain is not None and chain.progress.block >= block and indexer.writer:
                if not indexer.writer.queue:
                    return
            await asyncio.sleep(0.005)

    await asyncio.wait_for(reached(), timeout=20)


async def fresh_index(tmp_path, db, chains, end_block, depth=200, name="fresh"):
    """Index the final chains from nothing: what every rollback must arrive at."""
    project = write_project(
        tmp_path / name,
        BALANCES_SCHEMA,
        BALANCES_HANDLERS,
        end_block=end_block,
        chains=sorted(chains),
        max_reorg_depth=depth,
    )
    url = db(name)
    sources = {cid: ForkableSource(chain) for cid, chain in chains.items()}
    await Indexer(project, url, sources=sources).run()
    return await dump(url, project)


def tables_only(tables):
    return {k: v for k, v in tables.items() if not k.startswith("_history")}


@pytest.mark.parametrize("fork_at", [10, 8, 6], ids=["depth1", "depth3", "depth-of-window"])
async def test_rollback_reads_as_if_the_orphaned_blocks_never_existed(tmp_path, db, fork_at):
    chain = ForkableChain()
    chain.extend(10, "a", logs_of)
    project = write_project(
        tmp_path / "p", BALANCES_SCHEMA, BALANCES_HANDLERS, end_block=16, max_reorg_depth=5
    )
    url = db()
    indexer = Indexer(project, url, batch_size=3, sources={1: ForkableSource(chain)})
    run = asyncio.create_task(indexer.run())
    await wait_for_block(indexer, 10)

    chain.fork(fork_at, 16, "b", logs_of)
    await asyncio.wait_for(run, timeout=30)

    assert indexer.measures.rollbacks == 1
    got = await dump(url, project)
    assert tables_only(got) == tables_only(expected_tables({1: chain})) | {
        "_progress": {1: (16, 32)}
    }
    fresh = await fresh_index(tmp_path, db, {1: chain}, 16, depth=5)
    assert tables_only(got) == tables_only(fresh)


async def test_a_second_reorg_at_the_same_height_rolls_back_again(tmp_path, db):
    chain = ForkableChain()
    chain.extend(10, "a", logs_of)
    project = write_project(tmp_path / "p", BALANCES_SCHEMA, BALANCES_HANDLERS, end_block=14)
    url = db()
    indexer = Indexer(project, url, sources={1: ForkableSource(chain)})
    run = asyncio.create_task(indexer.run())
    await wait_for_block(indexer, 10)
    chain.fork(9, 12, "b", logs_of)
    await wait_for_block(indexer, 12)
    chain.fork(9, 14, "c", logs_of)
    await asyncio.wait_for(run, timeout=30)

    assert indexer.measures.rollbacks == 2
    got = await dump(url, project)
    assert tables_only(got) == tables_only(await fresh_index(tmp_path, db, {1: chain}, 14))
    assert tables_only(got)["Account"] == expected_tables({1: chain})["Account"]


async def test_reorg_while_commits_are_held_in_flight_loses_nothing(tmp_path, db):
    chain = ForkableChain()
    chain.extend(10, "a", logs_of)
    project = write_project(tmp_path / "p", BALANCES_SCHEMA, BALANCES_HANDLERS, end_block=15)
    url = db()
    forked = asyncio.Event()

    async def gate(commit):
        # Hold every commit a while, so the fork arrives with several batches queued.
        await asyncio.sleep(0.02)

    indexer = Indexer(
        project, url, batch_size=2, before_commit=gate, sources={1: ForkableSource(chain)}
    )
    run = asyncio.create_task(indexer.run())

    async def fork_when_processed():
        while indexer.measures.events < 14:
            await asyncio.sleep(0.001)
        assert indexer.writer is not None and indexer.writer.queue, "a commit should be queued"
        chain.fork(8, 15, "b", logs_of)
        forked.set()

    await asyncio.wait_for(fork_when_processed(), timeout=20)
    await asyncio.wait_for(run, timeout=30)
    got = await dump(url, project)
    assert tables_only(got) == tables_only(await fresh_index(tmp_path, db, {1: chain}, 15))


async def test_set_delete_set_restores_the_version_at_the_target(tmp_path, db):
    # Item "a": set at block 5, deleted at 6, set again at 7; "b" created at 6, deleted at 7.
    program = {
        (5, 0): [("set", "a", "x", 1)],
        (6, 0): [("delete", "a"), ("set", "b", "y", 2)],
        (7, 0): [("set", "a", "x", 3), ("delete", "b")],
    }

    def logs(number, branch):
        # Branch "a" carries the scripted events; later branches log index 9 (no script).
        index = 0 if branch == "a" else 9
        return [transfer(number, index, 1, 2, 1, branch)] if number in (5, 6, 7) else []

    for fork_at, expected in [
        (7, [("b", "y", 2)]),  # back to block 6: a deleted, b exists
        (6, [("a", "x", 1)]),  # back to block 5: a as first set, b never created
    ]:
        probe.reset(program)
        chain = ForkableChain()
        chain.extend(8, "a", logs)
        project = write_project(tmp_path / f"p{fork_at}", end_block=9)
        url = db(f"sds{fork_at}")
        indexer = Indexer(project, url, sources={1: ForkableSource(chain)})
        run = asyncio.create_task(indexer.run())
        await wait_for_block(indexer, 8)
        chain.fork(fork_at, 9, "b", logs)
        await asyncio.wait_for(run, timeout=30)
        assert (await dump(url, project, ("Item",)))["Item"] == expected


async def test_two_chain_reorg_rewinds_the_other_chains_later_batches(tmp_path, db):
    one, two = ForkableChain(), ForkableChain()
    one.extend(6, "a", logs_of)
    two.extend(6, "a", logs_of)
    project = write_project(
        tmp_path / "p", BALANCES_SCHEMA, BALANCES_HANDLERS, end_block=12, chains=[1, 2]
    )
    url = db()
    indexer = Indexer(
        project,
        url,
        batch_size=2,
        sources={1: ForkableSource(one), 2: ForkableSource(two)},
    )
    run = asyncio.create_task(indexer.run())
    await wait_for_block(indexer, 6, chain_id=1)
    await wait_for_block(indexer, 6, chain_id=2)
    two.extend(12, "a", logs_of)  # chain 2 runs ahead: its blocks 7-12 come after chain 1's 6
    await wait_for_block(indexer, 12, chain_id=2)
    one.fork(5, 12, "b", logs_of)
    await asyncio.wait_for(run, timeout=30)

    got = await dump(url, project)
    # Shared Accounts hold both chains' transfers: exactly the final chains' sums.
    assert tables_only(got) == tables_only(expected_tables({1: one, 2: two})) | {
        "_progress": {1: (12, 24), 2: (12, 24)}
    }
    assert indexer.measures.rollbacks == 1


async def test_restart_inside_the_window_then_reorg_uses_stored_hashes(tmp_path, db):
    chain = ForkableChain()
    chain.extend(10, "a", logs_of)
    project = write_project(tmp_path / "p", BALANCES_SCHEMA, BALANCES_HANDLERS, end_block=10)
    url = db()
    await Indexer(project, url, sources={1: ForkableSource(chain)}).run()

    chain.fork(8, 14, "b", logs_of)
    write_project(tmp_path / "p", BALANCES_SCHEMA, BALANCES_HANDLERS, end_block=14)
    restarted = Indexer(project, url, sources={1: ForkableSource(chain)})
    await asyncio.wait_for(restarted.run(), timeout=30)

    assert restarted.measures.rollbacks == 1
    got = await dump(url, project)
    assert tables_only(got) == tables_only(await fresh_index(tmp_path, db, {1: chain}, 14))


async def test_restart_after_a_reorg_was_seen_but_before_its_rollback(tmp_path, db):
    chain = ForkableChain()
    chain.extend(10, "a", logs_of)
    project = write_project(tmp_path / "p", BALANCES_SCHEMA, BALANCES_HANDLERS, end_block=14)
    url = db()

    async def crash_on_rollback(storage):
        async def crash(*args, **kwargs):
            raise RuntimeError("process died before the rollback")

        storage.rollback = crash

    first = Indexer(
        project, url, sources={1: ForkableSource(chain)}, on_storage_open=crash_on_rollback
    )
    run = asyncio.create_task(first.run())
    await wait_for_block(first, 10)
    before = await dump(url, project)
    chain.fork(9, 14, "b", logs_of)
    with pytest.raises(RuntimeError):
        await asyncio.wait_for(run, timeout=30)
    assert await dump(url, project) == before

    second = Indexer(project, url, sources={1: ForkableSource(chain)})
    await asyncio.wait_for(second.run(), timeout=30)
    got = await dump(url, project)
    assert tables_only(got) == tables_only(await fresh_index(tmp_path, db, {1: chain}, 14))


async def test_a_reorg_deeper_than_the_window_stops_with_a_clear_error(tmp_path, db):
    chain = ForkableChain()
    chain.extend(10, "a", logs_of)
    project = write_project(
        tmp_path / "p", BALANCES_SCHEMA, BALANCES_HANDLERS, end_block=14, max_reorg_depth=3
    )
    url = db()
    indexer = Indexer(project, url, sources={1: ForkableSource(chain)})
    run = asyncio.create_task(indexer.run())
    await wait_for_block(indexer, 10)
    before = await dump(url, project)
    chain.fork(4, 14, "b", logs_of)
    with pytest.raises(ReorgTooDeep) as failure:
        await asyncio.wait_for(run, timeout=30)
    assert "max_reorg_depth 3" in str(failure.value)
    assert "--reset" in str(failure.value)
    assert await dump(url, project) == before


async def test_a_backfill_below_the_window_writes_no_history(tmp_path, db):
    chain = ForkableChain()
    chain.extend(300, "a", logs_of)
    project = write_project(
        tmp_path / "p", BALANCES_SCHEMA, BALANCES_HANDLERS, end_block=250, max_reorg_depth=20
    )
    url = db()
    await Indexer(project, url, sources={1: ForkableSource(chain, page_blocks=25)}).run()
    assert (await dump(url, project))["_history_rows"] == 0

    write_project(
        tmp_path / "p", BALANCES_SCHEMA, BALANCES_HANDLERS, end_block=300, max_reorg_depth=20
    )
    await Indexer(project, url, sources={1: ForkableSource(chain, page_blocks=25)}).run()
    # Blocks 280-300 are in the window: 21 blocks x 2 transfers, each one Transfer and two
    # Account versions (at most), plus one baseline row per Account first seen there.
    history = (await dump(url, project))["_history_rows"]
    assert 21 * 2 < history <= 21 * 2 * 3 + 5


async def test_detect_only_mode_logs_and_keeps_the_index(tmp_path, db, caplog):
    chain = ForkableChain()
    chain.extend(10, "a", logs_of)
    project = write_project(
        tmp_path / "p",
        BALANCES_SCHEMA,
        BALANCES_HANDLERS,
        end_block=12,
        rollback_on_reorg=False,
    )
    url = db()
    indexer = Indexer(project, url, sources={1: ForkableSource(chain)})
    run = asyncio.create_task(indexer.run())
    await wait_for_block(indexer, 10)
    before = await dump(url, project)
    chain.fork(9, 12, "b", logs_of)
    await asyncio.wait_for(run, timeout=30)
    assert indexer.measures.reorgs == 1 and indexer.measures.rollbacks == 0
    assert "rollback_on_reorg is off" in caplog.text
    after = await dump(url, project)
    # Blocks 9-10 of branch "a" stay; 11-12 of branch "b" are added.
    added = [x for x in after["Transfer"] if x not in before["Transfer"]]
    assert sorted(added) == sorted(
        (f"1-{log.transaction_hash}", 1, int(log.data, 16))
        for n in (11, 12)
        for log in chain.logs[n]
    )


class DeadHeadersSource(ForkableSource):
    """Answers pages, but once ``dead`` is set its header requests never return, as a source
    that retries a dead node while following the head."""

    def __init__(self, chain: ForkableChain) -> None:
        super().__init__(chain)
        self.dead = False
        self.asked = asyncio.Event()

    async def headers(self, numbers):
        if self.dead:
            self.asked.set()
            await asyncio.Event().wait()
        return await super().headers(numbers)


async def test_stop_while_a_reorg_waits_on_a_dead_node_exits_and_the_restart_rolls_back(
    tmp_path, db
):
    chain = ForkableChain()
    chain.extend(10, "a", logs_of)
    project = write_project(tmp_path / "p", BALANCES_SCHEMA, BALANCES_HANDLERS, end_block=14)
    url = db()
    source = DeadHeadersSource(chain)
    indexer = Indexer(project, url, sources={1: source})
    run = asyncio.create_task(indexer.run())
    await wait_for_block(indexer, 10)
    before = await dump(url, project)

    source.dead = True
    chain.fork(9, 14, "b", logs_of)
    await asyncio.wait_for(source.asked.wait(), timeout=20)
    indexer.stop()
    await asyncio.wait_for(run, timeout=5)

    # Nothing was rolled back or written past the fork's detection.
    assert indexer.measures.rollbacks == 0
    assert await dump(url, project) == before
    assert before["_progress"] == {1: (10, 20)}

    # A healthy node on the next start: the stored hashes show the fork again.
    again = Indexer(project, url, sources={1: ForkableSource(chain)})
    await asyncio.wait_for(again.run(), timeout=30)
    assert again.measures.rollbacks == 1
    got = await dump(url, project)
    assert tables_only(got) == tables_only(expected_tables({1: chain})) | {
        "_progress": {1: (14, 28)}
    }


def write_archive(chain: ForkableChain, last: int, folder) -> None:
    """Blocks 1..last of the chain as it is now, shaped like RPC answers."""
    folder.mkdir(parents=True)
    logs = [
        {
            "address": log.address,
            "topics": log.topics,
            "data": log.data,
            "blockNumber": hex(log.block_number),
            "blockHash": log.block_hash,
            "transactionHash": log.transaction_hash,
            "transactionIndex": hex(log.transaction_index),
            "logIndex": hex(log.log_index),
            "removed": False,
        }
        for n in range(1, last + 1)
        for log in chain.logs[n]
    ]
    headers = [
        {
            "number": hex(h.number),
            "hash": h.hash,
            "parentHash": h.parent_hash or "0x" + "00" * 32,
            "timestamp": hex(h.timestamp),
        }
        for h in (chain.headers[n] for n in range(1, last + 1))
    ]
    (folder / "logs.jsonl").write_text("".join(json.dumps(x) + "\n" for x in logs))
    (folder / "blocks.jsonl").write_text("".join(json.dumps(x) + "\n" for x in headers))


class NodeOf(ForkableSource):
    """The forkable chain as the node of an archive-then-node chain."""

    chain_id = 1

    async def chain_ids(self):
        return [("forkable", 1)]


async def test_an_archive_from_a_dropped_branch_is_rolled_back_and_refetched_from_the_node(
    tmp_path, db
):
    from evmflow.sources.archive import ArchiveSource
    from evmflow.sources.handover import HandoverSource

    chain = ForkableChain()
    chain.extend(10, "a", logs_of)
    write_archive(chain, 10, tmp_path / "archive")
    # The node dropped blocks 8-10 of the branch the archive was made from.
    chain.fork(8, 14, "b", logs_of)

    project = write_project(tmp_path / "p", BALANCES_SCHEMA, BALANCES_HANDLERS, end_block=14)
    archive = ArchiveSource(
        tmp_path / "archive" / "logs.jsonl", tmp_path / "archive" / "blocks.jsonl"
    )
    source = HandoverSource(archive, NodeOf(chain))  # type: ignore[arg-type]
    url = db()
    indexer = Indexer(project, url, batch_size=3, sources={1: source})
    await asyncio.wait_for(indexer.run(), timeout=30)

    assert source.handed_over_at == 11
    assert indexer.measures.rollbacks == 1
    got = await dump(url, project)
    assert tables_only(got) == tables_only(expected_tables({1: chain})) | {
        "_progress": {1: (14, 28)}
    }
