"""Block handlers: run every N blocks, after that block's events, through reorgs too."""

from __future__ import annotations

import asyncio
import json

from evmflow.engine import Indexer
from tests.support.forkable import ForkableChain, ForkableSource, transfer
from tests.support.scripted import write_project
from tests.test_reorg import (
    dump,
    wait_for_block,
)

SCHEMA = """
type Snapshot @entity {
  id: ID!
  block: Int!
  timestamp: Int!
  transfersSoFar: Int!
}

type Counter @entity {
  id: ID!
  transfers: Int!
}
"""

HANDLERS = """
from evmflow.blocks import EveryThird
from evmflow.contracts import ERC20
from evmflow.entities import Counter, Snapshot


@ERC20.Transfer.handler
async def count(event, context):
    counter = await context.Counter.get("all") or Counter(id="all", transfers=0)
    counter.transfers += 1
    context.Counter.set(counter)


@EveryThird.handler
async def snapshot(block, context):
    counter = await context.Counter.get("all")
    context.Snapshot.set(
        Snapshot(
            id=f"{block.chain_id}-{block.block_number}",
            block=block.block_number,
            timestamp=block.block_timestamp,
            transfersSoFar=counter.transfers if counter else 0,
        )
    )
"""


def logs(number: int, branch: str) -> list:
    return [transfer(number, i, 1, 2, 5, branch) for i in range(number % 2 + (branch == "b"))]


def project(tmp_path, end_block: int):
    root = write_project(tmp_path / "p", SCHEMA, HANDLERS, end_block=end_block)
    config = json.loads((root / "evmflow.yaml").read_text())
    config["blocks"] = [{"name": "EveryThird", "every": 3, "start_block": 2}]
    (root / "evmflow.yaml").write_text(json.dumps(config))
    return root


def expected_snapshots(chain: ForkableChain, last: int) -> list[tuple]:
    """At blocks 2, 5, 8, ...: transfers of every block up to and including that one."""
    out = []
    for number in range(2, last + 1, 3):
        so_far = sum(len(chain.logs[n]) for n in range(1, number + 1))
        out.append((f"1-{number}", number, chain.headers[number].timestamp, so_far))
    return sorted(out)


async def test_block_handlers_run_every_n_blocks_after_that_blocks_events(tmp_path, db):
    chain = ForkableChain()
    chain.extend(20, "a", logs)
    root = project(tmp_path, 20)
    url = db()
    await Indexer(root, url, batch_size=2, sources={1: ForkableSource(chain, 4)}).run()
    assert (await dump(url, root, ("Snapshot",)))["Snapshot"] == expected_snapshots(chain, 20)


async def test_block_handler_results_are_rolled_back_with_a_reorg(tmp_path, db):
    chain = ForkableChain()
    chain.extend(10, "a", logs)
    root = project(tmp_path, 16)
    url = db()
    indexer = Indexer(root, url, sources={1: ForkableSource(chain)})
    running = asyncio.create_task(indexer.run())
    await wait_for_block(indexer, 10)
    chain.fork(7, 16, "b", logs)
    await asyncio.wait_for(running, timeout=30)
    assert indexer.measures.rollbacks == 1
    assert (await dump(url, root, ("Snapshot",)))["Snapshot"] == expected_snapshots(chain, 16)
