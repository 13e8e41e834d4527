"""What the reorg window costs: the same RPC backfill with no block in the window vs every one.

Anvil serves a dataset of ``gen_transfers.py --dump-state`` (bench/data/NAME.state.json) and
then mines ``--tail`` empty blocks on top, so the dataset lies far below the head. The Indexer
backfills the dataset (start to end block, the workload of bench_engine.py: both Accounts
loaded and written back, one Transfer row per event) over JSON-RPC twice per run:

- ``far``: ``max_reorg_depth`` 200 (the default): the window is the last 200 blocks below
  the head, far above the dataset, so no page is checked and no history or checkpoint row
  is written;
- ``every``: ``max_reorg_depth`` larger than the chain: every block is in the window, so each
  page's headers are checked against the known hashes and each change of an entity also
  writes a history row (plus one checkpoint row per block with events).

Each run uses a fresh database (SQLite file, or a PostgreSQL schema dropped afterwards) and
checks the Transfer table holds the dataset's event count. Printed: events/s over the whole
``Indexer.run`` (open, fetch, check, decode, handlers, commits, drain), commit seconds, and
the history and checkpoint rows left in the database.

    python bench/bench_reorg_window.py                            # transfers-100k, SQLite
    python bench/bench_reorg_window.py --db postgres --runs 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from bench_rpc_e2e import PG_URL  # noqa: E402
from bench_rpc_e2e import write_project as write_rpc_project  # noqa: E402

from tests.support.anvil import Anvil  # noqa: E402

FAR_DEPTH = 200
COLUMNS = [  # title, key of run_one's result, width
    ("window", "window", 7),
    ("depth", "depth", 7),
    ("events/s", "events_per_s", 10),
    ("seconds", "seconds", 9),
    ("commit s", "commit_s", 9),
    ("handler s", "handler_s", 10),
    ("hist Account", "history_account", 13),
    ("hist Transfer", "history_transfer", 14),
    ("checkpoints", "checkpoints", 12),
]


async def table_counts(url: str, tables: list[str]) -> dict[str, int]:
    """Row counts read with the plain drivers, not through evmflow."""
    if url.startswith("sqlite:///"):
        import sqlite3

        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            return {t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}
        finally:
            conn.close()
    import asyncpg

    base, _, schema = url.partition("?schema=")
    conn = await asyncpg.connect(base)
    try:
        return {t: await conn.fetchval(f'SELECT count(*) FROM "{schema}"."{t}"') for t in tables}
    finally:
        await conn.close()


async def drop_schema(url: str) -> None:
    import asyncpg

    base, _, schema = url.partition("?schema=")
    conn = await asyncpg.connect(base)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


def run_one(node: Anvil, meta: dict, depth: int, args: argparse.Namespace) -> dict:
    from evmflow.engine import Indexer

    with tempfile.TemporaryDirectory() as tmp:
        project = write_rpc_project(Path(tmp), meta, node.url, args.span, args.concurrency)
        config_file = project / "evmflow.yaml"
        config = json.loads(config_file.read_text())
        config["chains"][0]["max_reorg_depth"] = depth
        config_file.write_text(json.dumps(config))
        if args.db == "postgres":
            url = f"{PG_URL}?schema=bench_reorg_{uuid.uuid4().hex[:8]}"
        else:
            url = f"sqlite:///{Path(tmp) / 'index.db'}"
        indexer = Indexer(project, url, batch_size=args.batch_size)
        try:
            started = time.perf_counter()
            asyncio.run(indexer.run())
            seconds = time.perf_counter() - started
            tables = ["Transfer", "_evmflow_checkpoints"]
            tables += ["_evmflow_history_Account", "_evmflow_history_Transfer"]
            counts = asyncio.run(table_counts(url, tables))
        finally:
            if args.db == "postgres":
                asyncio.run(drop_schema(url))
    if indexer.measures.events != meta["events"] or counts["Transfer"] != meta["events"]:
        raise SystemExit(
            f"depth {depth}: {indexer.measures.events} events handled, {counts['Transfer']} "
            f"Transfer rows; expected {meta['events']}"
        )
    writer = indexer.writer
    assert writer is not None
    return {
        "depth": depth,
        "seconds": round(seconds, 2),
        "events_per_s": round(meta["events"] / seconds),
        "commit_s": round(writer.commit_seconds, 2),
        "handler_s": round(indexer.measures.handler_seconds, 2),
        "history_account": counts["_evmflow_history_Account"],
        "history_transfer": counts["_evmflow_history_Transfer"],
        "checkpoints": counts["_evmflow_checkpoints"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="transfers-100k")
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--tail", type=int, default=1000, help="empty blocks mined on top")
    parser.add_argument("--span", type=int, default=20, help="rpc max_block_range")
    parser.add_argument("--concurrency", type=int, default=4, help="rpc concurrency")
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=1, help="rounds of far + every")
    args = parser.parse_args()

    meta = json.loads((HERE / "data" / f"{args.data}.meta.json").read_text())
    state = HERE / "data" / meta["state_file"]
    started = time.perf_counter()
    with Anvil(chain_id=meta["chain_id"], load_state=state, start_timeout=300) as node:
        loaded = time.perf_counter() - started
        node.mine(args.tail)
        head = node.block_number()
        print(
            f"data {args.data}: {meta['events']:,} events in blocks {meta['first_block']}-"
            f"{meta['last_block']}, head {head} (anvil loaded in {loaded:.1f} s, not counted); "
            f"{args.db}, rpc range {args.span} x {args.concurrency}, batch {args.batch_size}"
        )
        if head - FAR_DEPTH <= meta["last_block"]:
            raise SystemExit(f"--tail {args.tail} leaves the dataset inside the far window")
        settings = {"far": FAR_DEPTH, "every": head + 1}
        print("".join(f"{title:>{width}}" for title, _, width in COLUMNS), flush=True)
        for _ in range(args.runs):
            for name, depth in settings.items():
                row = {"window": name, **run_one(node, meta, depth, args)}
                print("".join(_cell(row[key], width) for _, key, width in COLUMNS), flush=True)


def _cell(value: object, width: int) -> str:
    return f"{value:>{width},}" if isinstance(value, int) else f"{value!s:>{width}}"


if __name__ == "__main__":
    main()
