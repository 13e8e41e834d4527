"""How fast RpcSource fetches logs from a local anvil node holding ~100k Transfer events.

    python bench/bench_rpc_fetch.py                 # the 100k set of gen_transfers.py
    python bench/bench_rpc_fetch.py --runs 3

Uses ``bench/data/transfers-100k.state.json`` (``gen_transfers.py --events 100000
--dump-state``) when it exists, else generates 100,000 events over 100 blocks first. Then,
for a few block-range sizes and concurrencies, it reads every Transfer log of the token with
``RpcSource.pages`` (logs, headers, checks) and prints logs per second. Each run checks that
exactly the expected number of logs arrived.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "src"))

from evmflow.sources.base import LogFilter  # noqa: E402
from evmflow.sources.rpc import RpcSource  # noqa: E402
from tests.support.anvil import TRANSFER_TOPIC, Anvil, BenchToken, spam_transfers  # noqa: E402

DATA = REPO / "bench" / "data"
SETTINGS = [  # (max_block_range, concurrency); the set has 1,000 logs a block
    (5, 1),
    (5, 4),
    (20, 1),
    (20, 4),
    (100, 1),
]


async def fetch_once(url: str, token: str, first: int, last: int, span: int, conc: int):
    source = RpcSource(31337, [url], max_block_range=span, concurrency=conc)
    filters = [LogFilter([token], [TRANSFER_TOPIC])]
    count = 0
    started = time.perf_counter()
    try:
        async for page in source.pages(first, last, filters):
            count += len(page.logs)
    finally:
        await source.close()
    return count, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2, help="runs per setting; the best counts")
    args = parser.parse_args()

    meta_path = DATA / "transfers-100k.meta.json"
    state_path = DATA / "transfers-100k.state.json"
    if meta_path.exists() and state_path.exists():
        meta = orjson.loads(meta_path.read_bytes())
        node = Anvil(chain_id=meta["chain_id"], load_state=state_path)
        node.start()
        token, first, last, events = (
            meta["token"],
            meta["first_block"],
            meta["last_block"],
            meta["events"],
        )
        print(f"anvil loaded {state_path.name}: {events:,} events, blocks {first}-{last}")
    else:
        node = Anvil(chain_id=31337)
        node.start()
        started = time.perf_counter()
        bench_token = BenchToken.deploy(node)
        spam = spam_transfers(bench_token, 100_000, 100)
        token, first, last, events = bench_token.address, spam.first_block, spam.last_block, 100_000
        print(f"generated {events:,} events in {time.perf_counter() - started:.1f} s")

    try:
        print(f"{'max_block_range':>15} {'concurrency':>11} {'seconds':>8} {'logs/s':>10}")
        for span, conc in SETTINGS:
            best = float("inf")
            for _ in range(args.runs):
                count, seconds = asyncio.run(fetch_once(node.url, token, first, last, span, conc))
                if count != events:
                    raise SystemExit(f"fetched {count} logs, expected {events}")
                best = min(best, seconds)
            print(f"{span:>15} {conc:>11} {best:>8.2f} {events / best:>10,.0f}")
    finally:
        node.stop()


if __name__ == "__main__":
    main()
