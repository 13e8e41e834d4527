"""/metrics and /ready of an app serving a running indexer (the bundled example, SQLite),
scraped over real HTTP on loopback and parsed with prometheus_client's own parser.

The expected event count comes from the raw JSONL archive (tests.conftest.erc20_transfers).
"""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from evmflow.api import serve
from evmflow.engine import Indexer
from tests.conftest import EXAMPLE_DIR, erc20_transfers

START_BLOCK = 17_686_110
END_BLOCK = 17_686_312
ARCHIVE = EXAMPLE_DIR / "data" / "firehose-17686110"


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """(sample name, sorted labels) -> value of a Prometheus text exposition."""
    out: dict[tuple[str, tuple], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def get(base: str, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session:
        async with session.get(base + path) as response:
            return response.status, await response.text()


async def test_metrics_count_the_indexed_events_and_ready_turns_200_at_the_end(
    tmp_path: Path,
) -> None:
    transfers = erc20_transfers(
        Path(f"{ARCHIVE}.logs.jsonl.gz"),
        Path(f"{ARCHIVE}.blocks.jsonl.gz"),
        1,
        START_BLOCK,
        END_BLOCK,
    )
    url = f"sqlite:///{tmp_path / 'index.db'}"
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    during: list[tuple[int, dict, dict]] = []

    async def scrape_before_commit(_commit: Any) -> None:
        status, body = await get(base, "/ready")
        _, text = await get(base, "/metrics")
        during.append((status, json.loads(body), samples(text)))

    indexer = Indexer(EXAMPLE_DIR, url, batch_size=1000, before_commit=scrape_before_commit)
    server = asyncio.ensure_future(
        serve(EXAMPLE_DIR, url, indexer=indexer, handle_signals=False, sock=sock)
    )
    try:
        for _ in range(200):
            try:
                if (await get(base, "/healthz"))[0] == 200:
                    break
            except aiohttp.ClientConnectorError:
                await asyncio.sleep(0.05)
        await indexer.run()
        status, text = await get(base, "/metrics")
        ready_status, _ = await get(base, "/ready")
    finally:
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)
        sock.close()

    assert status == 200
    final = samples(text)
    chain = (("chain_id", "1"),)
    assert final[("evmflow_events_total", ())] == len(transfers)
    assert final[("evmflow_chain_events_total", chain)] == len(transfers)
    assert final[("evmflow_chain_block", chain)] == END_BLOCK
    assert final[("evmflow_chain_end_block", chain)] == END_BLOCK
    assert final[("evmflow_batch_size_limit", ())] == 1000
    assert final[("evmflow_reorgs_total", ())] == 0
    assert final[("evmflow_rollbacks_total", ())] == 0
    assert final[("evmflow_batches_committed_total", ())] == final[("evmflow_batches_total", ())]
    assert final[("evmflow_commits_total", ())] >= 1
    for name in ("commit", "preload", "handler", "writer_idle", "waited_on_writer"):
        assert final[(f"evmflow_{name}_seconds_total", ())] >= 0
    assert ready_status == 200

    # Before the first commit nothing is committed: not ready, and the body says why.
    first_status, first_body, first_metrics = during[0]
    assert first_status == 503
    assert first_body["ready"] is False
    assert first_body["reason"] == f"catching up: chain 1 at block {START_BLOCK - 1} of {END_BLOCK}"
    assert first_metrics[("evmflow_commits_total", ())] == 0
    # At each commit, the events counted so far never exceed the total and never go back.
    counted = [m[("evmflow_chain_events_total", chain)] for _, _, m in during]
    assert counted == sorted(counted) and counted[-1] <= len(transfers)
