"""RpcSource against a scripted node serving real mainnet data, and against real anvil.

Every expected value is computed from the raw data with plain Python (or asked from anvil),
never from evmflow's code.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from evmflow.errors import SourceError
from evmflow.sources.base import LogFilter, Page
from evmflow.sources.rpc import RpcSource, bloom_may_contain, mask_url, retry_after_seconds
from tests.support.rpc_server import (
    DATA,
    Chain,
    RpcServer,
    compute_bloom,
    free_port,
    load_erigon_fixture,
    load_mainnet,
)

TRANSFER = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
SWAP_V2 = "0xd78ad95fa46c994b6551d0da85fc275fe613ce37657fb8d5e3d130840159d822"
SYNC_V2 = "0x1c411e9a96e071241c2f21f7726b17ae89e3cab4c78be50e062b03a9fffbbad1"
USDC = "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48"
WETH = "0xc02aaa39b223fe8d0a0e5c4f27ead9083c756cc2"

FIRST, LAST = 17686110, 17686132  # the consecutive, complete blocks of the firehose set
LOGS, HEADERS = load_mainnet("firehose-17686110")
LOGS = [log for log in LOGS if FIRST <= int(log["blockNumber"], 16) <= LAST]
HEADERS = [h for h in HEADERS if FIRST <= int(h["number"], 16) <= LAST]

# Transfers of any contract, plus V2 Swap/Sync and anything of USDC/WETH: overlapping filters.
FILTERS = [
    LogFilter(None, [TRANSFER]),
    LogFilter(None, [SWAP_V2, SYNC_V2]),
    LogFilter(
        [USDC, WETH],
        [TRANSFER, "0x8c5be1e5ebec7d5bd14f71427d1e84f3dd0314c0f7b2291e5b200ac8c7c3b925"],
    ),
]

FAST = {
    "backoff_base": 0.001,
    "backoff_max": 0.005,
    "request_timeout": 2.0,
    "poll_interval": 0.01,
    "recover_after": 0.2,
}


def expected_logs(logs: list[dict], start: int, end: int, filters: list[LogFilter]) -> list[tuple]:
    """Matching logs of the raw data, as comparable tuples, in chain order."""
    found = set()
    for log in logs:
        number = int(log["blockNumber"], 16)
        if not start <= number <= end:
            continue
        for f in filters:
            if f.addresses is not None and log["address"].lower() not in {
                a.lower() for a in f.addresses
            }:
                continue
            if log["topics"] and log["topics"][0].lower() in {t.lower() for t in f.topic0s}:
                found.add(
                    (
                        number,
                        int(log["logIndex"], 16),
                        log["blockHash"].lower(),
                        log["address"].lower(),
                        tuple(t.lower() for t in log["topics"]),
                        log["data"].lower(),
                        log["transactionHash"].lower(),
                    )
                )
    return sorted(found)


def as_tuples(pages: list[Page]) -> list[tuple]:
    return [
        (
            log.block_number,
            log.log_index,
            log.block_hash,
            log.address,
            tuple(log.topics),
            log.data,
            log.transaction_hash,
        )
        for page in pages
        for log in page.logs
    ]


async def collect(source: RpcSource, start: int, end: int, filters=FILTERS) -> list[Page]:
    pages = [page async for page in source.pages(start, end, filters)]
    assert_pages_tile(pages, start, end)
    return pages


def assert_pages_tile(pages: list[Page], start: int, end: int) -> None:
    """Pages cover start..end without gap or overlap, and carry the headers they promise."""
    assert pages[0].from_block == start
    assert pages[-1].to_block == end
    for before, after in zip(pages, pages[1:], strict=False):
        assert after.from_block == before.to_block + 1
    for page in pages:
        assert page.to_block in page.blocks
        for log in page.logs:
            assert page.from_block <= log.block_number <= page.to_block
            assert page.blocks[log.block_number].hash == log.block_hash


@pytest.fixture
async def server():
    async with RpcServer(Chain(LOGS, HEADERS)) as running:
        yield running


def source_for(*urls: str, **options) -> RpcSource:
    return RpcSource(1, list(urls), **{**FAST, **options})


async def fetch_all(
    *urls: str, start: int = FIRST, end: int = LAST, filters=FILTERS, **options
) -> list[Page]:
    """Every page of start..end from a new source with test timings, closed afterwards."""
    source = source_for(*urls, **options)
    try:
        return await collect(source, start, end, filters)
    finally:
        await source.close()


async def test_pages_hold_every_matching_log_once_in_chain_order(server):
    pages = await fetch_all(server.url, max_block_range=4, concurrency=3)
    assert as_tuples(pages) == expected_logs(LOGS, FIRST, LAST, FILTERS)


async def test_page_headers_are_the_real_headers(server):
    pages = await fetch_all(server.url, max_block_range=5)
    real = {int(h["number"], 16): h for h in HEADERS}
    for page in pages:
        for number, header in page.blocks.items():
            assert header.hash == real[number]["hash"]
            assert header.parent_hash == real[number]["parentHash"]
            assert header.timestamp == int(real[number]["timestamp"], 16)


async def test_wildcard_filter_gets_every_log_of_the_blocks(server):
    everything = [LogFilter(None, sorted({log["topics"][0] for log in LOGS if log["topics"]}))]
    pages = await fetch_all(server.url, max_block_range=23, end=FIRST + 2, filters=everything)
    assert len(as_tuples(pages)) == sum(
        1 for log in LOGS if FIRST <= int(log["blockNumber"], 16) <= FIRST + 2 and log["topics"]
    )


def _span(limit: int, error: dict):
    return lambda start, end, count: error if end - start + 1 > limit else None


def _count(limit: int, error: dict):
    return lambda start, end, count: error if count > limit else None


def _alchemy(start: int, end: int, count: int) -> dict | None:
    if end - start + 1 <= 3:
        return None
    return {
        "code": -32602,
        "message": "Log response size exceeded. You can make eth_getLogs requests with up to a "
        "2K block range and no limit on the response size, or you can request any block range "
        "with a cap of 10K logs in the response. Based on your parameters and the response "
        f"size limit, this block range should work: [{hex(start)}, {hex(start + 2)}]",
    }


def _infura_data(start: int, end: int, count: int) -> dict | None:
    if count <= 1500:
        return None
    return {
        "code": -32005,
        "message": "query returned more than 10000 results",
        "data": {"from": hex(start), "limit": 10000, "to": hex(start + 1)},
    }


def _reth_echo(start: int, end: int, count: int) -> dict | None:
    # reth (and base) answer with the very range that was refused
    if count <= 1200:
        return None
    return {
        "code": -32602,
        "message": f"query exceeds max results 1200, retry with the range {start}-{end}",
    }


RANGE_FAULTS = [
    ("geth", _count(1000, {"code": -32000, "message": "query returned more than 1000 results"})),
    ("alchemy", _alchemy),
    ("infura-32005", _infura_data),
    ("infura-32602", _span(4, {"code": -32602, "message": "range 23 exceeds limit of 4"})),
    (
        "quicknode-range",
        _span(4, {"code": -32614, "message": "eth_getLogs is limited to a 4 range"}),
    ),
    (
        "quicknode-blocks",
        _span(
            3, {"code": -32602, "message": "eth_getLogs and eth_newFilter are limited to 3 blocks"}
        ),
    ),
    ("ankr", _span(5, {"code": -32600, "message": "block range is too wide"})),
    ("cloudflare", _span(3, {"code": -32047, "message": "Max range: 3"})),
    (
        "drpc",
        _span(4, {"code": 35, "message": "ranges over 4 blocks are not supported on freetier"}),
    ),
    ("publicnode", _span(4, {"code": -32000, "message": "exceed maximum block range: 4"})),
    ("reth-results-echo", _reth_echo),
    ("reth-range", _span(4, {"code": -32602, "message": "query exceeds max block range 4"})),
    (
        "erigon-range",
        _span(
            4,
            {
                "code": -32000,
                "message": "query block range exceeds server limit, narrow your filter: 4",
            },
        ),
    ),
    (
        "erigon-results",
        _count(
            900, {"code": -32000, "message": "query returns too many logs, narrow your filter: 900"}
        ),
    ),
    ("generic-range", _span(2, {"code": -32000, "message": "range too large"})),
    ("generic-too-many", _count(700, {"code": -32000, "message": "too many logs"})),
]


@pytest.mark.parametrize("refuse", [f[1] for f in RANGE_FAULTS], ids=[f[0] for f in RANGE_FAULTS])
async def test_range_refusals_shrink_the_range_and_lose_nothing(server, refuse):
    server.refuse = refuse
    pages = await fetch_all(server.url, max_block_range=16, concurrency=2, grow_after=2)
    assert as_tuples(pages) == expected_logs(LOGS, FIRST, LAST, FILTERS)
    assert server.refused, "the fault never fired"
    # a refused range is never asked again as it was
    assert len(set(server.refused)) == len(server.refused)


async def test_range_grows_again_after_successes(server):
    # Blocks FIRST..FIRST+3 are refused above 1 block; later the node takes anything.
    server.refuse = lambda start, end, count: (
        {"code": -32000, "message": "range too large"}
        if start < FIRST + 4 and end > start
        else None
    )
    await fetch_all(server.url, max_block_range=8, concurrency=1, grow_after=2)
    spans = [
        int(params[0]["toBlock"], 16) - int(params[0]["fromBlock"], 16) + 1
        for method, params in server.calls
        if method == "eth_getLogs"
    ]
    assert 1 in spans
    assert spans[-1] > 1


async def test_rate_limit_with_retry_after_is_waited_out(server):
    past = format_datetime(datetime(2015, 10, 21, 7, 28, tzinfo=UTC), usegmt=True)
    server.http_faults.extend([(429, {"Retry-After": "0"}), (429, {"Retry-After": past})])
    pages = await fetch_all(server.url, max_block_range=23)
    assert as_tuples(pages) == expected_logs(LOGS, FIRST, LAST, FILTERS)
    assert not server.http_faults


@pytest.mark.parametrize(
    ("header", "now", "expected"),
    [
        ("3", None, 3.0),
        ("0.5", None, 0.5),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 1445412480.0 - 7, 7.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 1445412480.0 + 60, 0.0),
        ("soon", None, None),
        (None, None, None),
    ],
)
def test_retry_after_header_is_read_as_seconds_or_http_date(header, now, expected):
    assert retry_after_seconds(header, now) == expected


async def test_server_errors_are_retried(server):
    server.http_faults.extend([(500, {}), (502, {}), (503, {})])
    pages = await fetch_all(server.url, max_block_range=23)
    assert as_tuples(pages) == expected_logs(LOGS, FIRST, LAST, FILTERS)


async def test_retries_end_in_source_error_naming_chain_method_and_masked_url(server):
    server.http_faults.extend([(500, {})] * 50)
    key = "a1b2c3d4e5f60718293a4b5c6d7e8f90"
    source = source_for(server.url + f"v3/{key}", max_retries=3)
    try:
        with pytest.raises(SourceError) as raised:
            await collect(source, FIRST, LAST)
    finally:
        await source.close()
    text = str(raised.value)
    assert "chain 1" in text
    assert "eth_blockNumber" in text
    assert f"127.0.0.1:{server.port}/v3/***" in text
    assert key not in text


async def test_stalled_request_times_out_and_is_retried(server):
    server.stalls = 1
    # a short range: client and node share one event loop, so the timeout covers both
    pages = await fetch_all(server.url, max_block_range=23, request_timeout=0.5, end=FIRST + 2)
    assert as_tuples(pages) == expected_logs(LOGS, FIRST, FIRST + 2, FILTERS)
    assert server.stalls == 0


async def test_dead_first_url_falls_back_to_the_next(server):
    dead = f"http://127.0.0.1:{free_port()}/"
    pages = await fetch_all(dead, server.url, max_block_range=6)
    assert as_tuples(pages) == expected_logs(LOGS, FIRST, LAST, FILTERS)


async def test_source_returns_to_the_first_url_once_it_recovers(server):
    async with RpcServer(Chain(LOGS, HEADERS)) as backup:
        server.http_faults.append((503, {}))
        source = source_for(server.url, backup.url, max_block_range=23, recover_after=0.2)
        try:
            await collect(source, FIRST, FIRST + 5)
            assert not server.http_faults
            assert any(method == "eth_getLogs" for method, _ in backup.calls)
            served_by_backup = len(backup.calls)

            await asyncio.sleep(0.3)  # longer than recover_after
            pages = await collect(source, FIRST + 6, LAST)
        finally:
            await source.close()
    assert len(backup.calls) == served_by_backup
    assert as_tuples(pages) == expected_logs(LOGS, FIRST + 6, LAST, FILTERS)


def _first_log_of(number: int):
    return next(log for log in LOGS if int(log["blockNumber"], 16) == number)


async def test_logs_of_one_block_with_two_hashes_are_fetched_again(server):
    def two_hashes(start, end, logs):
        in_block = [log for log in logs if int(log["blockNumber"], 16) == FIRST + 1]
        if len(in_block) < 2:
            return None
        in_block[0]["blockHash"] = "0x" + "ab" * 32
        return logs

    server.logs_hooks.append(two_hashes)
    pages = await fetch_all(server.url, max_block_range=4)
    assert not server.logs_hooks
    assert as_tuples(pages) == expected_logs(LOGS, FIRST, LAST, FILTERS)


async def test_header_disagreeing_with_logs_is_fetched_again(server):
    def other_hash(number, header):
        if number != FIRST + 2:
            return None
        return {**header, "hash": "0x" + "cd" * 32}

    server.header_hooks.append(other_hash)
    pages = await fetch_all(server.url, max_block_range=4)
    assert not server.header_hooks
    assert as_tuples(pages) == expected_logs(LOGS, FIRST, LAST, FILTERS)
    block = FIRST + 2
    assert pages[0].blocks[block].hash == _first_log_of(block)["blockHash"]


async def test_log_outside_the_asked_range_is_fetched_again(server):
    stray = _first_log_of(LAST)

    def add_stray(start, end, logs):
        return logs + [dict(stray)] if end < LAST else None

    server.logs_hooks.append(add_stray)
    pages = await fetch_all(server.url, max_block_range=4)
    assert not server.logs_hooks
    assert as_tuples(pages) == expected_logs(LOGS, FIRST, LAST, FILTERS)


async def test_answers_that_stay_inconsistent_end_in_source_error(server):
    def two_hashes(start, end, logs):
        if not logs:
            return None
        logs[-1]["blockHash"] = "0x" + "ef" * 32
        return logs

    server.logs_hooks.extend([two_hashes] * 100)
    source = source_for(server.url, max_block_range=23, consistency_retries=2)
    try:
        with pytest.raises(SourceError, match="inconsistent"):
            await collect(source, FIRST, LAST)
    finally:
        await source.close()


async def test_logs_missing_although_the_bloom_has_them_are_fetched_again(server, caplog):
    dropped_block = FIRST + 3

    def drop_last_block(start, end, logs):
        if end != dropped_block or not any(
            int(log["blockNumber"], 16) == dropped_block for log in logs
        ):
            return None
        return [log for log in logs if int(log["blockNumber"], 16) != dropped_block]

    server.logs_hooks.append(drop_last_block)
    source = source_for(server.url, max_block_range=4, concurrency=1)
    try:
        with caplog.at_level(logging.WARNING, logger="evmflow.sources.rpc"):
            pages = await collect(source, FIRST, LAST)
    finally:
        await source.close()
    assert not server.logs_hooks
    assert as_tuples(pages) == expected_logs(LOGS, FIRST, LAST, FILTERS)
    assert f"block {dropped_block}" in caplog.text


def _erigon_chain() -> tuple[list[dict], list[dict]]:
    """Transfer logs of blocks 16,000,000-16,000,001 and their full headers, as erigon sent."""
    logs = load_erigon_fixture("eth_getLogs", "test_04__test_04")[0]["response"]["result"]
    headers = [
        load_erigon_fixture("eth_getBlockByNumber", test)[0]["response"]["result"]
        for test in ("test_02", "test_04")
    ]
    logs = [log for log in logs if int(log["blockNumber"], 16) <= 16_000_001]
    return logs, headers


def test_bloom_check_agrees_with_real_headers():
    # a complete mainnet block: its header and every receipt, as a node returned them
    path = DATA / "rpc-fixtures" / "chainstorage" / "block_17053184.json.gz"
    with gzip.open(path, "rt") as text:
        block = json.load(text)
    header = block["eth_getBlockByNumber_full"]
    block_logs = [log for receipt in block["eth_getTransactionReceipt"] for log in receipt["logs"]]
    assert len(block_logs) == 216
    # the helper's independent bloom reproduces the real one from the block's logs
    assert compute_bloom(block_logs) == header["logsBloom"]
    for log in block_logs:
        assert bloom_may_contain(header["logsBloom"], [log["address"].lower()], [log["topics"][0]])
    assert not bloom_may_contain("0x" + "00" * 256, [WETH], [TRANSFER])
    assert not bloom_may_contain(compute_bloom([]), None, [TRANSFER])


async def test_real_bloom_catches_a_block_whose_logs_went_missing(caplog):
    logs, headers = _erigon_chain()

    def drop(start, end, found):
        if start != 16_000_001 or not found:
            return None
        return []

    async with RpcServer(Chain(logs, headers, head=16_000_001)) as node:
        node.logs_hooks.append(drop)
        source = source_for(node.url, max_block_range=1)
        filters = [LogFilter(None, [TRANSFER])]
        try:
            with caplog.at_level(logging.WARNING, logger="evmflow.sources.rpc"):
                pages = await collect(source, 16_000_000, 16_000_001, filters)
        finally:
            await source.close()
    assert as_tuples(pages) == expected_logs(logs, 16_000_000, 16_000_001, filters)
    assert len(as_tuples(pages)) == 164 + 108
    assert "block 16000001" in caplog.text


async def test_following_the_head_delivers_each_new_block_once(server):
    server.chain.head = FIRST + 5
    source = source_for(server.url, max_block_range=3)
    pages: list[Page] = []

    async def follow():
        async for page in source.pages(FIRST, None, FILTERS):
            pages.append(page)
            if page.to_block == LAST:
                return

    try:
        task = asyncio.create_task(follow())
        for head in (FIRST + 9, FIRST + 7, FIRST + 15, LAST):  # FIRST+7: a node behind us
            await asyncio.sleep(0.05)
            server.chain.head = head
        await asyncio.wait_for(task, 10)
    finally:
        await source.close()
    assert_pages_tile(pages, FIRST, LAST)
    assert as_tuples(pages) == expected_logs(LOGS, FIRST, LAST, FILTERS)


async def test_block_lag_keeps_pages_behind_the_head(server):
    source = source_for(server.url, max_block_range=30, block_lag=3)
    try:
        assert await source.head() == LAST - 3
        pages = []
        async for page in source.pages(FIRST, None, FILTERS):
            pages.append(page)
            if page.to_block == LAST - 3:
                break
    finally:
        await source.close()
    assert_pages_tile(pages, FIRST, LAST - 3)


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        (
            "https://eth-mainnet.g.alchemy.com/v2/aBcD3fGhIjKlMnOpQrStUvWx",
            "https://eth-mainnet.g.alchemy.com/v2/***",
        ),
        (
            "https://mainnet.infura.io/v3/0123456789abcdef0123456789abcdef",
            "https://mainnet.infura.io/v3/***",
        ),
        (
            "https://rpc.ankr.com/eth/4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e",
            "https://rpc.ankr.com/eth/***",
        ),
        (
            "https://broken-icy-mountain.quiknode.pro/14fb466c039ca54a895f597ee2744e848949099d/",
            "https://broken-icy-mountain.quiknode.pro/***/",
        ),
        ("https://user:hunter2@node.example.com:8545/", "https://***@node.example.com:8545/"),
        ("https://rpc.example.com/?apikey=short1", "https://rpc.example.com/?apikey=***"),
        ("https://ethereum-rpc.publicnode.com", "https://ethereum-rpc.publicnode.com"),
        ("http://127.0.0.1:8545/", "http://127.0.0.1:8545/"),
        (
            "https://lb.drpc.org/ogrpc?network=ethereum&dkey=Ak80gSCleU",
            "https://lb.drpc.org/ogrpc?network=ethereum&dkey=***",
        ),
    ],
)
def test_mask_url_hides_keys_and_keeps_the_host(url, masked):
    assert mask_url(url) == masked


async def test_secret_headers_never_appear_in_errors(server):
    server.http_faults.extend([(401, {})] * 10)
    source = source_for(server.url, headers={"Authorization": "Bearer s3cr3t-t0ken"}, max_retries=2)
    try:
        with pytest.raises(SourceError) as raised:
            await source.head()
    finally:
        await source.close()
    assert "s3cr3t" not in str(raised.value)
    assert "HTTP 401" in str(raised.value)


# --- against a real anvil node ---------------------------------------------------------------


def _anvil_tuples(raw_logs: list[dict]) -> list[tuple]:
    return [
        (
            int(log["blockNumber"], 16),
            int(log["logIndex"], 16),
            log["blockHash"].lower(),
            log["address"].lower(),
            tuple(t.lower() for t in log["topics"]),
            log["data"].lower(),
            log["transactionHash"].lower(),
        )
        for log in raw_logs
    ]


@pytest.fixture(scope="module")
def anvil_token():
    from tests.support.anvil import Anvil, AnvilNotFound, BenchToken

    try:
        node = Anvil(chain_id=31337)
    except AnvilNotFound as exc:
        pytest.skip(str(exc))
    with node:
        yield BenchToken.deploy(node)


@pytest.mark.anvil
async def test_logs_from_anvil_equal_anvils_own_get_logs(anvil_token):
    from tests.support.anvil import real_transfers, spam_transfers

    node = anvil_token.node
    spam_transfers(anvil_token, 3000, 25, events_per_tx=400, seed=7)
    real_transfers(anvil_token, 30, per_block=7, seed=7)
    head = node.block_number()
    expected = node.get_logs(0, head, address=anvil_token.address, topics=[[TRANSFER]])

    filters = [LogFilter([anvil_token.address], [TRANSFER])]
    pages = await fetch_all(
        node.url, start=0, end=head, filters=filters, max_block_range=6, concurrency=3
    )
    assert as_tuples(pages) == _anvil_tuples(expected)
    assert len(expected) == 3000 + 30 + 5  # spam, transfers, and the five mints
    for page in pages:
        for number, header in page.blocks.items():
            assert header.hash == node.get_block(number)["hash"]


@pytest.mark.anvil
async def test_following_anvils_head_delivers_each_new_log_once(anvil_token):
    from tests.support.anvil import real_transfers, spam_transfers

    node = anvil_token.node
    start = node.block_number() + 1
    filters = [LogFilter([anvil_token.address], [TRANSFER])]
    source = source_for(node.url, max_block_range=4, poll_interval=0.02)
    pages: list[Page] = []
    target: list[int] = []

    async def follow():
        async for page in source.pages(start, None, filters):
            pages.append(page)
            if target and page.to_block >= target[0]:
                return

    def grow_chain():
        spam_transfers(anvil_token, 400, 8, events_per_tx=100, seed=11)
        real_transfers(anvil_token, 12, per_block=3, seed=11)
        node.mine(2)
        return node.block_number()

    try:
        task = asyncio.create_task(follow())
        target.append(await asyncio.to_thread(grow_chain))
        await asyncio.wait_for(task, 30)
    finally:
        await source.close()
    assert_pages_tile(pages, start, target[0])
    expected = node.get_logs(start, target[0], address=anvil_token.address, topics=[[TRANSFER]])
    assert len(expected) == 400 + 12 + 5
    assert as_tuples(pages) == _anvil_tuples(expected)
