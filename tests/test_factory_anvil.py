"""Factory-created contracts and several chains, indexed over JSON-RPC from real anvil nodes.

The factory test deploys MiniFactory (tests/support/contracts), lets it create 100 real pairs,
makes every pair emit real Swap and Sync events (a different number per pair), creates one
more pair that emits in the very block of its creation, and makes a MiniPair deployed directly
(not by the factory) emit too. Every count is checked against the node's own eth_getLogs per
address and every reserve against the pair's own ``reserve0()``.

The multichain test runs two anvil nodes with different chain ids and block times, makes real
BenchToken transfers on both, and indexes them in one process: balances must equal the sum of
both chains' ``balanceOf``, and in ordered mode three runs with different batch sizes and page
sizes must call the handlers in the order of (block timestamp, chain id, block, log index)
computed from eth_getLogs and eth_getBlockByNumber.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from evmflow.engine import Indexer
from tests.conftest import as_int, dump_sqlite, run_evmflow
from tests.support import probe
from tests.support.anvil import (
    CONTRACTS_DIR,
    TRANSFER_TOPIC,
    Anvil,
    AnvilNotFound,
    BenchToken,
    decode_result,
    encode_call,
    event_topic,
    keccak256,
    real_transfers,
)
from tests.test_reorg import dump

pytestmark = pytest.mark.anvil

MINI_FACTORY_JSON = CONTRACTS_DIR / "MiniFactory.json"
MINI_PAIR_JSON = CONTRACTS_DIR / "MiniPair.json"
PAIR_CREATED = event_topic("PairCreated(address,address,address,uint256)")
SWAP = event_topic("Swap(address,uint256,uint256,uint256,uint256,address)")
SYNC = event_topic("Sync(uint112,uint112)")
ZERO = "0x" + "0" * 40


def start_node(chain_id: int, *extra: str) -> Anvil:
    try:
        return Anvil(chain_id=chain_id, extra_args=list(extra))
    except AnvilNotFound as exc:
        pytest.skip(str(exc))


def write_abi(root: Path, name: str, artifact: Path) -> str:
    """Write the ``abi`` part of a contract JSON into the project; its relative path."""
    (root / "abis").mkdir(parents=True, exist_ok=True)
    abi = json.loads(artifact.read_text())["abi"]
    (root / "abis" / f"{name}.json").write_text(json.dumps(abi))
    return f"abis/{name}.json"


def create_address(sender: str, nonce: int) -> str:
    """The address CREATE gives to a contract made by ``sender`` at ``nonce`` (RLP of
    [sender, nonce], hashed): lets a test aim a transaction at a pair not yet created."""
    if nonce == 0:
        nonce_rlp = b"\x80"
    elif nonce < 0x80:
        nonce_rlp = bytes([nonce])
    else:
        raw = nonce.to_bytes((nonce.bit_length() + 7) // 8, "big")
        nonce_rlp = bytes([0x80 + len(raw)]) + raw
    payload = b"\x94" + bytes.fromhex(sender.removeprefix("0x")) + nonce_rlp
    return "0x" + keccak256(bytes([0xC0 + len(payload)]) + payload)[12:].hex()


# -- factory-created contracts -------------------------------------------------------------------

FACTORY_SCHEMA = """
type Pair @entity {
  id: ID!
  created_block: Int!
  swaps: Int!
  syncs: Int!
  reserve0: BigInt!
  first_swap: String!
}
"""

FACTORY_HANDLERS = """
from evmflow.contracts import Factory, Pair
from evmflow.entities import Pair as PairRow


@Factory.PairCreated.register
def add_pair(event, registrar):
    registrar.add(Pair, event.params.pair)


@Factory.PairCreated.handler
async def on_created(event, context):
    context.Pair.set(PairRow(id=event.params.pair, created_block=event.block_number, swaps=0,
                             syncs=0, reserve0=0, first_swap=""))


async def pair_of(event, context):
    # A log of an address that was never created by the factory gets a row of its own
    # (created_block -1), so a wrongly routed event shows up in the table.
    row = await context.Pair.get(event.address)
    if row is None:
        row = PairRow(id=event.address, created_block=-1, swaps=0, syncs=0, reserve0=0,
                      first_swap="")
    return row


@Pair.Swap.handler
async def on_swap(event, context):
    row = await pair_of(event, context)
    row.swaps += 1
    if not row.first_swap:
        row.first_swap = f"{event.block_number}-{event.log_index}"
    context.Pair.set(row)


@Pair.Sync.handler
async def on_sync(event, context):
    row = await pair_of(event, context)
    row.syncs += 1
    row.reserve0 = event.params.reserve0
    context.Pair.set(row)
"""


@dataclass
class FactoryChain:
    node: Anvil
    factory: str
    pairs: list[str]  # every pair the factory created, in creation order
    born_and_swapped: str  # the pair created and emitting in one block
    born_block: int
    stranger: str  # a MiniPair deployed directly, never registered
    end_block: int


def spam_tx(node: Anvil, pair: str, n: int, seed: int, nonce: int) -> dict:
    data = encode_call("spam(uint256,uint256)", n, seed)
    return node.prepare_tx(pair, data, node.accounts[0], nonce, 100_000 + 20_000 * n)


def send_mined(node: Anvil, txs: list[dict], per_block: int) -> list[dict]:
    """Send the transactions ``per_block`` to a block (automine off); their receipts, each
    checked to have succeeded."""
    hashes: list[str] = []
    with node.manual_mining():
        for start in range(0, len(txs), per_block):
            hashes += node.send_many(txs[start : start + per_block])
            node.mine()
    receipts = node.batch([("eth_getTransactionReceipt", [h]) for h in hashes])
    assert all(r and r["status"] == "0x1" for r in receipts), receipts
    return receipts


def all_pairs(node: Anvil, factory: str) -> list[str]:
    count = int(decode_result(["uint256"], node.call(factory, encode_call("allPairsLength()")))[0])
    answers = node.batch(
        [
            ("eth_call", [{"to": factory, "data": encode_call("allPairs(uint256)", i)}, "latest"])
            for i in range(count)
        ]
    )
    return [str(decode_result(["address"], a)[0]).lower() for a in answers]


@pytest.fixture(scope="module")
def factory_chain() -> Iterator[FactoryChain]:
    with start_node(31337) as node:
        me = node.accounts[0]
        node.mine(3)
        factory = node.deploy(MINI_FACTORY_JSON)
        stranger = node.deploy(MINI_PAIR_JSON, "0x" + "11" * 20, "0x" + "22" * 20)
        node.send(factory, encode_call("createPairs(uint256,uint256)", 60, 7), gas=60_000_000)
        first = all_pairs(node, factory)
        nonce = node.nonce(me)
        # Round one: the first 60 pairs and the stranger, 1-3 (Swap, Sync) each.
        txs = [spam_tx(node, p, 1 + i % 3, i, nonce + i) for i, p in enumerate(first)]
        txs.append(spam_tx(node, stranger, 4, 99, nonce + len(txs)))
        send_mined(node, txs, per_block=9)
        node.mine(5)
        node.send(factory, encode_call("createPairs(uint256,uint256)", 40, 8), gas=60_000_000)
        pairs = all_pairs(node, factory)
        # Round two: every pair, 1-4 more each, pair i getting (7 * i) % 4 + 1.
        nonce = node.nonce(me)
        txs = [spam_tx(node, p, (7 * i) % 4 + 1, 1000 + i, nonce + i) for i, p in enumerate(pairs)]
        txs.append(spam_tx(node, stranger, 2, 98, nonce + len(txs)))
        send_mined(node, txs, per_block=13)
        # One block: an old pair swaps, a new pair is created, the new pair swaps at once.
        newborn = create_address(factory, node.nonce(factory, "latest"))
        nonce = node.nonce(me)
        create = encode_call("createPair(address,address)", "0x" + "33" * 20, "0x" + "44" * 20)
        receipts = send_mined(
            node,
            [
                spam_tx(node, pairs[5], 1, 5000, nonce),
                node.prepare_tx(factory, create, me, nonce + 1, 2_000_000),
                spam_tx(node, newborn, 3, 5001, nonce + 2),
            ],
            per_block=3,
        )
        assert len({r["blockNumber"] for r in receipts}) == 1
        assert all_pairs(node, factory)[-1] == newborn
        node.mine(2)
        yield FactoryChain(
            node,
            factory,
            [*pairs, newborn],
            newborn,
            int(receipts[0]["blockNumber"], 16),
            stranger,
            node.block_number(),
        )


def factory_project(root: Path, chain: FactoryChain) -> Path:
    root.mkdir(parents=True)
    (root / "schema.graphql").write_text(FACTORY_SCHEMA)
    (root / "handlers.py").write_text(textwrap.dedent(FACTORY_HANDLERS))
    config = {
        "name": "anvil-factory",
        "chains": [
            {
                "id": 31337,
                "start_block": 0,
                "end_block": chain.end_block,
                "rpc": {"urls": [chain.node.url], "max_block_range": 8},
            }
        ],
        "contracts": [
            {
                "name": "Factory",
                "abi": write_abi(root, "MiniFactory", MINI_FACTORY_JSON),
                "address": chain.factory,
                "events": ["PairCreated"],
            },
            {
                "name": "Pair",
                "abi": write_abi(root, "MiniPair", MINI_PAIR_JSON),
                "registered": True,
                "events": ["Swap", "Sync"],
            },
        ],
    }
    (root / "evmflow.yaml").write_text(json.dumps(config))
    return root


def expected_pairs(chain: FactoryChain) -> list[tuple]:
    """Pair rows from the node itself: PairCreated logs, Swap/Sync logs per address, and each
    pair's reserve0() storage (the last Sync it emitted carries it)."""
    node = chain.node
    created = node.get_logs(0, chain.end_block, chain.factory, [PAIR_CREATED])
    rows = []
    for log in created:
        pair = "0x" + log["data"][2 + 24 : 2 + 64]
        swaps = node.get_logs(0, chain.end_block, pair, [SWAP])
        syncs = node.get_logs(0, chain.end_block, pair, [SYNC])
        reserve0 = int(decode_result(["uint112"], node.call(pair, encode_call("reserve0()")))[0])
        first = f"{int(swaps[0]['blockNumber'], 16)}-{int(swaps[0]['logIndex'], 16)}"
        rows.append((pair, int(log["blockNumber"], 16), len(swaps), len(syncs), reserve0, first))
    return sorted(rows)


async def test_every_factory_pair_counts_its_own_swaps_and_syncs(
    tmp_path: Path, factory_chain: FactoryChain, db
):
    chain = factory_chain
    expected = expected_pairs(chain)
    # The fixture made what the test is about: 101 pairs, every one emitting, counts varying.
    assert [row[0] for row in expected] == sorted(chain.pairs) and len(expected) == 101
    assert all(row[2] == row[3] > 0 for row in expected)
    assert len({row[2] for row in expected}) >= 4
    stranger_swaps = chain.node.get_logs(0, chain.end_block, chain.stranger, [SWAP])
    assert len(stranger_swaps) == 6

    project = factory_project(tmp_path / "p", chain)
    url = db()
    await Indexer(project, url, batch_size=50).run()

    tables = await dump(url, project, ("Pair",))
    got = [
        (r[0], r[1], r[2], r[3], as_int(r[4]), r[5])
        for r in tables["Pair"]  # type: ignore[index]
    ]
    assert got == expected
    assert chain.stranger not in {row[0] for row in got}
    total = sum(row[2] + row[3] for row in expected) + len(expected)
    assert tables["_progress"] == {31337: (chain.end_block, total)}


async def test_a_pair_that_emits_in_its_creation_block_is_counted_from_its_creation(
    tmp_path: Path, factory_chain: FactoryChain, db
):
    chain = factory_chain
    node = chain.node
    block = chain.born_block
    logs = node.get_logs(block, block)
    created = [x for x in logs if x["topics"][0] == PAIR_CREATED]
    own = [x for x in logs if x["address"].lower() == chain.born_and_swapped]
    # The node put the creation before the new pair's first logs in that very block.
    assert len(created) == 1 and len(own) == 6
    assert all(int(x["logIndex"], 16) > int(created[0]["logIndex"], 16) for x in own)

    project = factory_project(tmp_path / "p", chain)
    url = db()
    await Indexer(project, url, batch_size=5).run()

    rows = {r[0]: r for r in (await dump(url, project, ("Pair",)))["Pair"]}  # type: ignore[union-attr]
    row = rows[chain.born_and_swapped]
    first_swap = min(int(x["logIndex"], 16) for x in own if x["topics"][0] == SWAP)
    assert (row[1], row[2], row[3], row[5]) == (block, 3, 3, f"{block}-{first_swap}")


async def test_pairs_registered_before_a_restart_keep_counting_after_it(
    tmp_path: Path, factory_chain: FactoryChain, db
):
    chain = factory_chain
    project = factory_project(tmp_path / "p", chain)
    url = db()
    config = json.loads((project / "evmflow.yaml").read_text())
    # Stop one block before the same-block pair is born: 100 pairs are registered by then.
    config["chains"][0]["end_block"] = chain.born_block - 1
    (project / "evmflow.yaml").write_text(json.dumps(config))
    await Indexer(project, url, batch_size=30).run()
    first = (await dump(url, project, ("Pair",)))["Pair"]
    assert len(first) == 100  # type: ignore[arg-type]

    config["chains"][0]["end_block"] = chain.end_block
    (project / "evmflow.yaml").write_text(json.dumps(config))
    await Indexer(project, url, batch_size=30).run()

    tables = await dump(url, project, ("Pair",))
    got = [(r[0], r[1], r[2], r[3], as_int(r[4]), r[5]) for r in tables["Pair"]]  # type: ignore[index]
    assert got == expected_pairs(chain)


# -- several chains ----------------------------------------------------------------------------

CHAIN_IDS = (31337, 31338)
GENESIS_TIME = 1_700_000_000
# Block intervals in seconds: 6 and 4 make the chains' blocks interleave in time and share a
# timestamp every 12 s, where the chain id decides the order.
INTERVALS = {31337: 6, 31338: 4}

MULTI_SCHEMA = """
type Account @entity {
  id: ID!
  balance: BigInt!
  transfers: Int!
  last_chain: Int!
  last_seq: Int!
}

type Transfer @entity {
  id: ID!
  chain: Int!
  block: Int!
  sender: Bytes!
  receiver: Bytes!
  value: BigInt!
  seq: Int!
}
"""

MULTI_HANDLERS = """
from evmflow.contracts import ERC20
from evmflow.entities import Account, Transfer
from tests.support import probe


@ERC20.Transfer.handler
async def on_transfer(event, context):
    if not context.is_preload:
        probe.READS.append(
            (event.block_timestamp, event.chain_id, event.block_number, event.log_index)
        )
    seq = len(probe.READS)
    value = event.params.value
    for holder, delta in ((event.params.from_, -value), (event.params.to, value)):
        account = await context.Account.get(holder)
        if account is None:
            account = Account(id=holder, balance=0, transfers=0, last_chain=0, last_seq=0)
        account.balance += delta
        account.transfers += 1
        account.last_chain = event.chain_id
        account.last_seq = seq
        context.Account.set(account)
    context.Transfer.set(
        Transfer(id=f"{event.chain_id}-{event.block_number}-{event.log_index}",
                 chain=event.chain_id, block=event.block_number, sender=event.params.from_,
                 receiver=event.params.to, value=value, seq=seq)
    )
"""


@dataclass
class TwoChains:
    nodes: dict[int, Anvil]
    tokens: dict[int, BenchToken]
    holders: list[str]
    end_blocks: dict[int, int]


@pytest.fixture(scope="module")
def two_chains() -> Iterator[TwoChains]:
    with (
        start_node(CHAIN_IDS[0], "--timestamp", str(GENESIS_TIME)) as one,
        start_node(CHAIN_IDS[1], "--timestamp", str(GENESIS_TIME)) as two,
    ):
        nodes = {CHAIN_IDS[0]: one, CHAIN_IDS[1]: two}
        tokens = {}
        holders = one.accounts[:5]
        for (cid, node), (count, per_block) in zip(nodes.items(), [(70, 3), (90, 2)], strict=True):
            node.rpc("anvil_setBlockTimestampInterval", [INTERVALS[cid]])
            tokens[cid] = BenchToken.deploy(node)
            node.mine(cid % 7)  # the chains' blocks of one height differ in time and content
            real_transfers(tokens[cid], count, seed=cid, holders=holders, per_block=per_block)
            node.mine(3)
        yield TwoChains(nodes, tokens, holders, {c: n.block_number() for c, n in nodes.items()})


def multi_project(root: Path, chains: TwoChains, *, ordered: bool, page: int) -> Path:
    root.mkdir(parents=True)
    (root / "schema.graphql").write_text(MULTI_SCHEMA)
    (root / "handlers.py").write_text(textwrap.dedent(MULTI_HANDLERS))
    abi = write_abi(root, "ERC20", CONTRACTS_DIR / "BenchToken.json")
    config = {
        "name": "anvil-two-chains",
        "engine": {"multichain": "ordered" if ordered else "unordered"},
        "chains": [
            {
                "id": cid,
                "start_block": 0,
                "end_block": chains.end_blocks[cid],
                "rpc": {"urls": [node.url], "max_block_range": page},
            }
            for cid, node in chains.nodes.items()
        ],
        "contracts": [
            {
                "name": "ERC20",
                "abi": abi,
                "address": sorted({t.address for t in chains.tokens.values()}),
                "events": ["Transfer"],
            }
        ],
    }
    (root / "evmflow.yaml").write_text(json.dumps(config))
    return root


def chain_transfers(chains: TwoChains) -> list[tuple]:
    """Every Transfer log of both chains as (timestamp, chain, block, log index, from, to,
    value), sorted in the ordered mode's order; timestamps from eth_getBlockByNumber."""
    out = []
    for cid, node in chains.nodes.items():
        logs = node.get_logs(0, chains.end_blocks[cid], chains.tokens[cid].address)
        assert logs and all(x["topics"][0] == TRANSFER_TOPIC for x in logs)
        numbers = sorted({int(x["blockNumber"], 16) for x in logs})
        blocks = node.batch([("eth_getBlockByNumber", [hex(n), False]) for n in numbers])
        times = {n: int(b["timestamp"], 16) for n, b in zip(numbers, blocks, strict=True)}
        for x in logs:
            block = int(x["blockNumber"], 16)
            out.append(
                (
                    times[block],
                    cid,
                    block,
                    int(x["logIndex"], 16),
                    "0x" + x["topics"][1][-40:],
                    "0x" + x["topics"][2][-40:],
                    int(x["data"], 16),
                )
            )
    return sorted(out)


def transfer_rows(tables: dict) -> dict[str, tuple]:
    return {r[0]: (r[1], r[2], r[3], r[4], as_int(r[5]), r[6]) for r in tables["Transfer"]}


async def test_one_process_indexes_two_chains_and_balances_add_up(
    tmp_path: Path, two_chains: TwoChains, db
):
    chains = two_chains
    logs = chain_transfers(chains)
    project = multi_project(tmp_path / "p", chains, ordered=False, page=10)
    url = db()
    probe.reset({})
    await Indexer(project, url, batch_size=40).run()

    tables = await dump(url, project, ("Account", "Transfer"))
    balances = {r[0]: as_int(r[1]) for r in tables["Account"]}  # type: ignore[index]
    for holder in chains.holders:
        assert balances[holder] == sum(t.balance_of(holder) for t in chains.tokens.values())
    assert balances[ZERO] == -sum(t.total_supply() for t in chains.tokens.values())
    assert set(balances) == {*chains.holders, ZERO}
    stored = {k: v[:5] for k, v in transfer_rows(tables).items()}
    assert stored == {
        f"{c}-{b}-{i}": (c, b, sender, receiver, value)
        for _, c, b, i, sender, receiver, value in logs
    }
    per_chain = {cid: sum(1 for x in logs if x[1] == cid) for cid in CHAIN_IDS}
    assert per_chain == {31337: 5 + 70, 31338: 5 + 90}  # the mints and transfers made
    assert tables["_progress"] == {
        cid: (chains.end_blocks[cid], per_chain[cid]) for cid in CHAIN_IDS
    }
    # Each chain's own events came in that chain's order.
    for cid in CHAIN_IDS:
        assert [r[1:] for r in probe.READS if r[1] == cid] == [x[1:4] for x in logs if x[1] == cid]


async def test_ordered_runs_call_handlers_in_timestamp_chain_block_log_order(
    tmp_path: Path, two_chains: TwoChains, db
):
    chains = two_chains
    logs = chain_transfers(chains)
    expected_order = [x[:4] for x in logs]
    # The data makes the order matter: the chains interleave, and share timestamps.
    switches = sum(1 for a, b in zip(logs, logs[1:], strict=False) if a[1] != b[1])
    assert switches >= 10
    shared = {x[0] for x in logs if x[1] == CHAIN_IDS[0]} & {
        x[0] for x in logs if x[1] == CHAIN_IDS[1]
    }
    assert shared

    expected_transfers = {
        f"{c}-{b}-{i}": (c, b, sender, receiver, value, seq)
        for seq, (_, c, b, i, sender, receiver, value) in enumerate(logs, start=1)
    }
    last: dict[str, tuple[int, int]] = {}
    for seq, (_, c, _, _, sender, receiver, _) in enumerate(logs, start=1):
        last[sender] = last[receiver] = (c, seq)

    orders, dumps = [], []
    for run, (batch_size, page) in enumerate([(1, 3), (7, 10), (5000, 1000)]):
        project = multi_project(tmp_path / f"p{run}", chains, ordered=True, page=page)
        url = db(f"ordered{run}")
        probe.reset({})
        await Indexer(project, url, batch_size=batch_size).run()
        orders.append(list(probe.READS))
        tables = await dump(url, project, ("Account", "Transfer"))
        dumps.append(tables)
        assert transfer_rows(tables) == expected_transfers
        assert {r[0]: (r[3], r[4]) for r in tables["Account"]} == last  # type: ignore[index]

    assert orders[0] == expected_order
    assert orders[1] == orders[0] and orders[2] == orders[0]
    assert dumps[1] == dumps[0] and dumps[2] == dumps[0]


def test_a_node_of_another_chain_than_configured_is_refused(tmp_path: Path, two_chains: TwoChains):
    chains = two_chains
    project = multi_project(tmp_path / "p", chains, ordered=False, page=10)
    config = json.loads((project / "evmflow.yaml").read_text())
    # chains[1] says 31338 but points at the 31337 node.
    config["chains"][1]["rpc"]["urls"] = [chains.nodes[CHAIN_IDS[0]].url]
    # An end block that node has, so the run ends (rather than waiting for that block).
    config["chains"][1]["end_block"] = chains.end_blocks[CHAIN_IDS[0]]
    (project / "evmflow.yaml").write_text(json.dumps(config))

    result = run_evmflow("run", project, "--db", f"sqlite:///{tmp_path / 'index.db'}", timeout=30)

    assert result.returncode != 0
    assert "31337" in result.stderr and "31338" in result.stderr
    assert not dump_sqlite(tmp_path / "index.db").get("Transfer")
