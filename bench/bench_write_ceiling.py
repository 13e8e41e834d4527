"""How fast can plain asyncpg write the benchmark's rows? The ceiling bench_engine.py is read
against.

The rows are the ones bench_engine.py's workload commits: per batch of 5,000 transfers, one
Transfer row each and one Account row for every account the batch touched, with the balances
and counts computed here in plain Python before timing starts. Each method writes them
serially, one transaction per batch, into fresh tables (NUMERIC balances and values, TEXT
ids, as evmflow lays them out):

    copy      COPY into a temporary table, then INSERT ... SELECT ... ON CONFLICT DO UPDATE
    unnest    INSERT ... SELECT * FROM unnest($1::text[], ...) ON CONFLICT DO UPDATE
    many      executemany of one INSERT ... ON CONFLICT DO UPDATE

    python bench/bench_write_ceiling.py --data transfers-100k
    python bench/bench_write_ceiling.py --data transfers-1m --only copy

Only the writes are timed (decoding the archive is not); transfers/s counts Transfer rows.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import time
import uuid
from pathlib import Path

import asyncpg

HERE = Path(__file__).resolve().parent
PG = "postgresql://postgres@127.0.0.1:5432/postgres"


def batches(name: str, size: int) -> list[tuple[list[tuple], list[tuple]]]:
    """(transfer rows, account rows) per batch, from the archive's raw lines."""
    balances: dict[str, int] = {}
    counts: dict[str, int] = {}
    out = []
    transfers: list[tuple] = []
    touched: set[str] = set()
    with gzip.open(HERE / "data" / f"{name}.logs.jsonl.gz", "rt") as lines:
        for line in lines:
            log = json.loads(line)
            sender = "0x" + log["topics"][1][-40:]
            receiver = "0x" + log["topics"][2][-40:]
            value = int(log["data"], 16)
            block = int(log["blockNumber"], 16)
            for account, delta in ((sender, -value), (receiver, value)):
                balances[account] = balances.get(account, 0) + delta
                counts[account] = counts.get(account, 0) + 1
                touched.add(account)
            transfers.append(
                (f"{block}-{int(log['logIndex'], 16)}", sender, receiver, value, block)
            )
            if len(transfers) == size:
                out.append((transfers, [(a, balances[a], counts[a]) for a in sorted(touched)]))
                transfers, touched = [], set()
    if transfers:
        out.append((transfers, [(a, balances[a], counts[a]) for a in sorted(touched)]))
    return out


ACCOUNT_COLS = '"id", "balance", "transfers"'
TRANSFER_COLS = '"id", "from", "to", "value", "block"'
ACCOUNT_SET = 'ON CONFLICT ("id") DO UPDATE SET "balance" = excluded."balance", ' + (
    '"transfers" = excluded."transfers"'
)
TRANSFER_SET = (
    'ON CONFLICT ("id") DO UPDATE SET "from" = excluded."from", "to" = excluded."to", '
    '"value" = excluded."value", "block" = excluded."block"'
)


async def setup(db: asyncpg.Connection) -> None:
    await db.execute(
        'CREATE TABLE "Account" ("id" TEXT PRIMARY KEY, "balance" NUMERIC NOT NULL, '
        '"transfers" BIGINT NOT NULL)'
    )
    await db.execute(
        'CREATE TABLE "Transfer" ("id" TEXT PRIMARY KEY, "from" TEXT NOT NULL, '
        '"to" TEXT NOT NULL, "value" NUMERIC NOT NULL, "block" BIGINT NOT NULL)'
    )
    await db.execute('CREATE TEMP TABLE "sa" (LIKE "Account") ON COMMIT DELETE ROWS')
    await db.execute('CREATE TEMP TABLE "st" (LIKE "Transfer") ON COMMIT DELETE ROWS')


async def write_copy(db: asyncpg.Connection, transfers: list, accounts: list) -> None:
    async with db.transaction():
        await db.copy_records_to_table("sa", records=accounts, schema_name="pg_temp")
        await db.copy_records_to_table("st", records=transfers, schema_name="pg_temp")
        await db.execute(
            f'INSERT INTO "Account" ({ACCOUNT_COLS}) SELECT {ACCOUNT_COLS} FROM pg_temp."sa" '
            f"{ACCOUNT_SET};\n"
            f'INSERT INTO "Transfer" ({TRANSFER_COLS}) SELECT {TRANSFER_COLS} FROM pg_temp."st" '
            f"{TRANSFER_SET}"
        )


async def write_unnest(db: asyncpg.Connection, transfers: list, accounts: list) -> None:
    async with db.transaction():
        await db.execute(
            f'INSERT INTO "Account" ({ACCOUNT_COLS}) SELECT * FROM '
            f"unnest($1::text[], $2::numeric[], $3::bigint[]) {ACCOUNT_SET}",
            *map(list, zip(*accounts, strict=True)),
        )
        await db.execute(
            f'INSERT INTO "Transfer" ({TRANSFER_COLS}) SELECT * FROM unnest($1::text[], '
            f"$2::text[], $3::text[], $4::numeric[], $5::bigint[]) {TRANSFER_SET}",
            *map(list, zip(*transfers, strict=True)),
        )


async def write_many(db: asyncpg.Connection, transfers: list, accounts: list) -> None:
    async with db.transaction():
        await db.executemany(
            f'INSERT INTO "Account" ({ACCOUNT_COLS}) VALUES ($1, $2, $3) {ACCOUNT_SET}', accounts
        )
        await db.executemany(
            f'INSERT INTO "Transfer" ({TRANSFER_COLS}) VALUES ($1, $2, $3, $4, $5) {TRANSFER_SET}',
            transfers,
        )


METHODS = {"copy": write_copy, "unnest": write_unnest, "many": write_many}


async def run(method: str, work: list) -> dict:
    schema = "ceiling_" + uuid.uuid4().hex[:8]
    admin = await asyncpg.connect(PG)
    await admin.execute(f'CREATE SCHEMA "{schema}"')
    db = await asyncpg.connect(PG, server_settings={"search_path": schema})
    try:
        await setup(db)
        write = METHODS[method]
        started = time.perf_counter()
        cpu = time.process_time()
        for transfers, accounts in work:
            await write(db, transfers, accounts)
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu
        count = await db.fetchval('SELECT COUNT(*) FROM "Transfer"')
    finally:
        await db.close()
        await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await admin.close()
    total = sum(len(t) for t, _ in work)
    assert count == total, (count, total)
    return {
        "method": method,
        "transfers": total,
        "seconds": round(seconds, 2),
        "transfers_per_s": round(total / seconds),
        "python_cpu_s": round(cpu, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="transfers-100k")
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--only", action="append", choices=sorted(METHODS))
    args = parser.parse_args()
    work = batches(args.data, args.batch_size)
    for method in args.only or list(METHODS):
        print(json.dumps(asyncio.run(run(method, work))), flush=True)


if __name__ == "__main__":
    main()
