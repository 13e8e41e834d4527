"""Several chains in one indexer, factory-registered contracts, and the ordered mode."""

from __future__ import annotations

import asyncio
import json
import shutil
import textwrap
from pathlib import Path

import pytest

from evmflow.engine import Indexer
from evmflow.sources.base import Log
from tests.support import probe
from tests.support.forkable import ForkableChain, ForkableSource, block_hash, transfer
from tests.support.scripted import write_project
from tests.test_reorg import (
    dump,
    wait_for_block,
)

ROOT = Path(__file__).resolve().parents[1]
UNISWAP_ABIS = ROOT / "src" / "evmflow" / "templates" / "uniswap-v2" / "abis"
PAIR_CREATED = "0x0d3648bd0f6ba80134a33ba9275ac585d9d315f0ad8355cddefde31afa28d0e9"
SYNC = "0x1c411e9a96e071241c2f21f7726b17ae89e3cab4c78be50e062b03a9fffbbad1"
FACTORY = "0x" + "fa" * 20

CALL_ORDER_HANDLERS = """
from evmflow.contracts import ERC20
from evmflow.entities import Item
from tests.support import probe


@ERC20.Transfer.handler
async def remember(event, context):
    if not context.is_preload:
        probe.READS.append(
            (event.block_timestamp, event.chain_id, event.block_number, event.log_index)
        )
    context.Item.set(Item(id=f"{event.chain_id}-{event.block_number}-{event.log_index}",
                          owner=str(event.chain_id), score=len(probe.READS)))
"""


def two_chains() -> dict[int, ForkableChain]:
    """Chain 1 makes a block every 12 s, chain 2 every 5 s from a later start: their events
    interleave in time, and some share a timestamp."""
    one = ForkableChain(genesis_time=1_000, block_time=12)
    two = ForkableChain(genesis_time=1_010, block_time=5)

    def logs(number: int, branch: str) -> list[Log]:
        return [transfer(number, i, 1, 2, number * 10 + i, branch) for i in range(number % 3)]

    one.extend(20, "a", logs)
    two.extend(40, "a", logs)
    return {1: one, 2: two}


@pytest.mark.parametrize("batch_size", [1, 4, 50])
async def test_ordered_mode_handles_every_chain_in_one_global_order(tmp_path, db, batch_size):
    chains = two_chains()
    expected = sorted(
        (log.block_timestamp, cid, log.block_number, log.log_index)
        for cid, chain in chains.items()
        for log in chain.all_logs()
    )
    orders = []
    for run in range(3):
        project = write_project(
            tmp_path / f"p{run}", handlers=CALL_ORDER_HANDLERS, end_block=None, chains=[1, 2]
        )
        config = json.loads((project / "evmflow.yaml").read_text())
        config["engine"] = {"multichain": "ordered"}
        config["chains"][0]["end_block"] = 20
        config["chains"][1]["end_block"] = 40
        (project / "evmflow.yaml").write_text(json.dumps(config))
        probe.reset({})
        url = db(f"ordered{run}")
        sources = {cid: ForkableSource(chain, page_blocks=3 + cid) for cid, chain in chains.items()}
        await Indexer(project, url, batch_size=batch_size, sources=sources).run()
        orders.append(list(probe.READS))
        tables = await dump(url, project, ("Item",))
        assert len(tables["Item"]) == len(expected)
    assert orders[0] == expected
    assert orders[1] == orders[0] and orders[2] == orders[0]


def two_chain_project(folder: Path) -> Path:
    """The call-order project over two_chains(), to their last blocks."""
    project = write_project(folder, handlers=CALL_ORDER_HANDLERS, chains=[1, 2])
    config = json.loads((project / "evmflow.yaml").read_text())
    config["chains"][0]["end_block"] = 20
    config["chains"][1]["end_block"] = 40
    (project / "evmflow.yaml").write_text(json.dumps(config))
    probe.reset({})
    return project


async def test_unordered_mode_keeps_each_chains_own_order(tmp_path, db):
    chains = two_chains()
    project = two_chain_project(tmp_path / "p")
    url = db()
    sources = {cid: ForkableSource(chain, page_blocks=4) for cid, chain in chains.items()}
    await Indexer(project, url, batch_size=3, sources=sources).run()
    for cid, chain in chains.items():
        seen = [(b, i) for _, c, b, i in probe.READS if c == cid]
        assert seen == [(log.block_number, log.log_index) for log in chain.all_logs()]


async def test_unordered_mode_gives_every_chain_a_turn_when_all_have_pages_ready(tmp_path, db):
    # Both sources hand out pages without waiting; the first batches must not all come from
    # the chain listed first.
    chains = two_chains()
    project = two_chain_project(tmp_path / "p")
    batches: list[str] = []

    async def note(commit):
        batches.append(commit.description)

    sources = {cid: ForkableSource(chain, page_blocks=4) for cid, chain in chains.items()}
    await Indexer(
        project, db(), batch_size=2, pipeline=False, before_commit=note, sources=sources
    ).run()
    for cid in (1, 2):
        turns = [b for b in batches[:8] if f"chain {cid} " in b]
        assert len(turns) >= 4, batches[:8]
    total = sum(len(chain.all_logs()) for chain in chains.values())
    assert len(probe.READS) == total


# -- factories ---------------------------------------------------------------------------------

FACTORY_SCHEMA = """
type Pair @entity {
  id: ID!
  syncs: Int!
  reserve0: BigInt!
}
"""

FACTORY_HANDLERS = """
from evmflow.contracts import Factory, Pair
from evmflow.entities import Pair as PairEntity


@Factory.PairCreated.register
def add_pair(event, registrar):
    registrar.add(Pair, event.params.pair)


@Factory.PairCreated.handler
async def on_created(event, context):
    context.Pair.set(PairEntity(id=event.params.pair, syncs=0, reserve0=0))


@Pair.Sync.handler
async def on_sync(event, context):
    pair = await context.Pair.get_or_throw(event.address)
    pair.syncs += 1
    pair.reserve0 = event.params.reserve0
    context.Pair.set(pair)
"""


def factory_project(root: Path, end_block: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(UNISWAP_ABIS, root / "abis", dirs_exist_ok=True)
    (root / "schema.graphql").write_text(FACTORY_SCHEMA)
    (root / "handlers.py").write_text(textwrap.dedent(FACTORY_HANDLERS))
    (root / "unused.logs.jsonl").write_text("")
    config = {
        "name": "factory",
        "chains": [
            {"id": 1, "start_block": 1, "end_block": end_block, "archive": {"path": "unused"}}
        ],
        "contracts": [
            {
                "name": "Factory",
                "abi": "abis/UniswapV2Factory.json",
                "address": FACTORY,
                "events": ["PairCreated"],
            },
            {
                "name": "Pair",
                "abi": "abis/UniswapV2Pair.json",
                "registered": True,
                "events": ["Sync"],
            },
        ],
    }
    (root / "evmflow.yaml").write_text(json.dumps(config))
    return root


def pair_address(n: int) -> str:
    return "0x" + format(0xBEEF0000 + n, "040x")


def created(block: int, index: int, n: int, branch: str) -> Log:
    return Log(
        FACTORY,
        [PAIR_CREATED, "0x" + format(0xAA, "064x"), "0x" + format(0xBB + n, "064x")],
        "0x" + format(int(pair_address(n), 16), "064x") + format(n, "064x"),
        block,
        block_hash(block, branch),
        "0x" + format(block * 100 + index, "064x"),
        0,
        index,
    )


def sync(block: int, index: int, address: str, reserve: int, branch: str) -> Log:
    return Log(
        address,
        [SYNC],
        "0x" + format(reserve, "064x") + format(1, "064x"),
        block,
        block_hash(block, branch),
        "0x" + format(block * 100 + index, "064x"),
        0,
        index,
    )


def factory_logs(number: int, branch: str) -> list[Log]:
    """Pair n is created at block 2n+1 (log 0) and syncs in that block (log 1) and every block
    after; it also 'syncs' one block before its creation, which must be ignored. A stranger
    address syncs every block and is never registered."""
    out: list[Log] = []
    index = 0
    for n in range(1, 4):
        born = 2 * n + 1
        if number == born and branch == "a":
            out.append(created(number, index, n, branch))
            index += 1
        if number >= born - 1:
            out.append(sync(number, index, pair_address(n), 1000 * number + n, branch))
            index += 1
    out.append(sync(number, index, "0x" + "5e" * 20, 7, branch))
    return out


def expected_pairs(chain: ForkableChain) -> list[tuple]:
    """Straight from the logs: a pair's syncs after its PairCreated, in chain order."""
    born: dict[str, tuple[int, int]] = {}
    syncs: dict[str, int] = {}
    reserve: dict[str, int] = {}
    for log in chain.all_logs():
        if log.topics[0] == PAIR_CREATED:
            pair = "0x" + log.data[2 + 24 : 2 + 64]
            born[pair] = (log.block_number, log.log_index)
            syncs[pair], reserve[pair] = 0, 0
        elif log.address in born and (log.block_number, log.log_index) > born[log.address]:
            syncs[log.address] += 1
            reserve[log.address] = int(log.data[2:66], 16)
    return sorted((p, syncs[p], reserve[p]) for p in born)


async def test_factory_children_are_indexed_from_their_creation_on(tmp_path, db):
    chain = ForkableChain()
    chain.extend(10, "a", factory_logs)
    project = factory_project(tmp_path / "p", end_block=10)
    url = db()
    await Indexer(project, url, batch_size=2, sources={1: ForkableSource(chain)}).run()
    got = (await dump(url, project, ("Pair",)))["Pair"]
    assert got == expected_pairs(chain)
    assert [p for p, _, _ in got] == [pair_address(n) for n in (1, 2, 3)]


async def test_registrations_survive_a_restart(tmp_path, db):
    chain = ForkableChain()
    chain.extend(12, "a", factory_logs)
    project = factory_project(tmp_path / "p", end_block=4)
    url = db()
    await Indexer(project, url, sources={1: ForkableSource(chain)}).run()
    factory_project(tmp_path / "p", end_block=12)
    await Indexer(project, url, sources={1: ForkableSource(chain)}).run()
    assert (await dump(url, project, ("Pair",)))["Pair"] == expected_pairs(chain)


async def test_a_reorg_that_removes_a_registration_removes_the_childs_entities(tmp_path, db):
    chain = ForkableChain()
    chain.extend(8, "a", factory_logs)
    project = factory_project(tmp_path / "p", end_block=12)
    url = db()
    indexer = Indexer(project, url, sources={1: ForkableSource(chain)})
    run = asyncio.create_task(indexer.run())
    await wait_for_block(indexer, 8)
    # Branch "b" from block 5 on: pair 2 (born at 5) and pair 3 (born at 7) are never created.
    chain.fork(5, 12, "b", factory_logs)
    await asyncio.wait_for(run, timeout=30)

    assert indexer.measures.rollbacks == 1
    got = (await dump(url, project, ("Pair",)))["Pair"]
    assert got == expected_pairs(chain)
    assert [p for p, _, _ in got] == [pair_address(1)]


@pytest.mark.parametrize("mode", ["unordered", "ordered"])
async def test_stop_while_following_the_head_keeps_what_is_committed(tmp_path, db, mode):
    chains = two_chains()
    project = write_project(
        tmp_path / "p", handlers=CALL_ORDER_HANDLERS, end_block=None, chains=[1, 2]
    )
    config = json.loads((project / "evmflow.yaml").read_text())
    config["engine"] = {"multichain": mode}
    (project / "evmflow.yaml").write_text(json.dumps(config))
    probe.reset({})
    url = db()
    sources = {cid: ForkableSource(chain) for cid, chain in chains.items()}
    indexer = Indexer(project, url, sources=sources)
    running = asyncio.create_task(indexer.run())
    # Unordered, both chains reach their heads. Ordered, chain 1's last blocks are later than
    # chain 2's last one, so they wait for chain 2 to move on: only chain 2 gets to its head.
    if mode == "unordered":
        await wait_for_block(indexer, 20, chain_id=1)
    await wait_for_block(indexer, 40, chain_id=2)
    indexer.stop()  # what Ctrl-C does; both sources now wait for blocks that never come
    await asyncio.wait_for(running, timeout=10)
    assert not indexer.finished
    tables = await dump(url, project, ("Item",))
    progress = tables["_progress"]
    # Exactly the events of the committed blocks are stored, on each chain.
    for cid, chain in chains.items():
        stored = [row for row in tables["Item"] if row[1] == str(cid)]
        logs = [log for log in chain.all_logs() if log.block_number <= progress[cid][0]]
        assert len(stored) == len(logs) == progress[cid][1]
    assert progress[2][0] == 40
    if mode == "unordered":
        assert progress[1][0] == 20
