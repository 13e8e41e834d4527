"""End-to-end engine benchmark: ERC-20 transfers from an archive into SQLite or PostgreSQL.

Workload: every Transfer loads both Accounts, writes them back and inserts a Transfer row.
Each configuration runs in a fresh process (so peak memory is its own); the table reports
events/s for the whole run (open, fetch, decode, handle, commit, drain) and peak RSS.

    python bench/gen_transfers.py --events 1000000      # once: bench/data/transfers-1m.*
    python bench/bench_engine.py --data transfers-1m     # all configurations
    python bench/bench_engine.py --data transfers-100k --only sqlite-pipelined
    python bench/bench_engine.py --data firehose         # the bundled example's real data

Configurations: sqlite and postgres, pipelined and serial (each commit awaited), and
postgres behind a loopback proxy adding 1 ms and 5 ms per round trip (latency_proxy.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "src"))

SCHEMA = """
type Account @entity {
  id: ID!
  balance: BigInt!
  transfers: Int!
}

type Transfer @entity {
  id: ID!
  from: Bytes!
  to: Bytes!
  value: BigInt!
  block: Int!
}
"""

HANDLERS = """
from evmflow.contracts import ERC20
from evmflow.entities import Account, Transfer


@ERC20.Transfer.handler
async def on_transfer(event, context):
    p = event.params
    sender = await context.Account.get(p.from_)
    if sender is None:
        sender = Account(id=p.from_, balance=0, transfers=0)
    receiver = await context.Account.get(p.to)
    if receiver is None:
        receiver = Account(id=p.to, balance=0, transfers=0)
    sender.balance -= p.value
    sender.transfers += 1
    context.Account.set(sender)
    receiver.balance += p.value
    receiver.transfers += 1
    context.Account.set(receiver)
    context.Transfer.set(
        Transfer(
            id=f"{event.block_number}-{event.log_index}",
            from_=p.from_,
            to=p.to,
            value=p.value,
            block=event.block_number,
        )
    )
"""

PG = "postgresql://postgres@127.0.0.1:{port}/postgres"


def dataset(name: str) -> tuple[Path, int, int, int]:
    """Archive prefix, chain id, first and last block."""
    if name == "firehose":
        prefix = ROOT / "examples" / "erc20-mainnet" / "data" / "firehose-17686110"
        return prefix, 1, 17686110, 17686312
    meta = json.loads((HERE / "data" / f"{name}.meta.json").read_text())
    return HERE / "data" / name, meta["chain_id"], meta["first_block"], meta["last_block"]


def write_project(folder: Path, data: str, preload: str = "always") -> Path:
    prefix, chain_id, first, last = dataset(data)
    abi = ROOT / "examples" / "erc20-mainnet" / "abis" / "ERC20.json"
    (folder / "schema.graphql").write_text(SCHEMA)
    (folder / "handlers.py").write_text(HANDLERS)
    config = {
        "name": "bench",
        "chains": [
            {
                "id": chain_id,
                "start_block": first,
                "end_block": last,
                "archive": {"path": str(prefix)},
            }
        ],
        "contracts": [{"name": "ERC20", "abi": str(abi), "events": ["Transfer"]}],
        "engine": {"preload": preload},
    }
    (folder / "evmflow.yaml").write_text(json.dumps(config))
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MemorySource:
    """The archive's pages read into memory before the clock starts (``--source memory``):
    the engine alone, without the archive reader's share of the CPU."""

    def __init__(self, data: str) -> None:
        from evmflow.sources.archive import ArchiveSource
        from evmflow.sources.base import LogFilter

        prefix, _, first, last = dataset(data)
        archive = ArchiveSource(
            f"{prefix}.logs.jsonl.gz", f"{prefix}.blocks.jsonl.gz", max_page_logs=5000
        )
        self.last = last
        self.all_pages = list(archive._iter_pages(first, last, [LogFilter(None, [])]))

    async def head(self) -> int:
        return self.last

    async def pages(self, from_block, to_block, filters):  # type: ignore[no-untyped-def]
        for page in self.all_pages:
            if page.to_block >= from_block:
                yield page

    async def close(self) -> None:
        return None


def run_one(
    project: Path, url: str, pipeline: bool, batch_size: int, sources: dict | None = None
) -> dict:
    from evmflow.engine import Indexer

    indexer = Indexer(
        project, url, reset=True, pipeline=pipeline, batch_size=batch_size, sources=sources
    )
    busy_before = machine_busy_seconds()
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    asyncio.run(indexer.run())
    seconds = time.perf_counter() - started
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy = machine_busy_seconds() - busy_before
    m = indexer.measures
    w = indexer.writer
    assert w is not None
    return {
        "events": m.events,
        "seconds": round(seconds, 2),
        "events_per_s": round(m.events / seconds),
        "decode_s": round(m.decode_seconds, 2),
        "preload_s": round(m.preload_seconds, 2),
        "handler_s": round(m.handler_seconds, 2),
        "commit_s": round(w.commit_seconds, 2),
        "commits": w.commits,
        "waited_on_writer_s": round(m.waited_on_writer_seconds, 2),
        "waited_on_source_s": round(m.waited_on_source_seconds, 2),
        "writer_idle_s": round(w.idle_seconds, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        # CPU seconds: this process, its archive reader process, and the whole machine (the
        # database server and anything else running) over the same wall time.
        "cpu_s": round(
            cpu_after.ru_utime + cpu_after.ru_stime - cpu_before.ru_utime - cpu_before.ru_stime,
            2,
        ),
        "reader_cpu_s": round(children.ru_utime + children.ru_stime, 2),
        "machine_cpu_s": round(busy, 2),
    }


def machine_busy_seconds() -> float:
    """CPU seconds every core of the machine has spent busy since boot (Linux /proc/stat)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return 0.0
    ticks = [int(x) for x in fields]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


CONFIGS = {
    "sqlite-serial": ("sqlite", False, 0),
    "sqlite-pipelined": ("sqlite", True, 0),
    "postgres-serial": ("postgres", False, 0),
    "postgres-pipelined": ("postgres", True, 0),
    "postgres+1ms-serial": ("postgres", False, 1),
    "postgres+1ms-pipelined": ("postgres", True, 1),
    "postgres+5ms-serial": ("postgres", False, 5),
    "postgres+5ms-pipelined": ("postgres", True, 5),
}


def child(args: argparse.Namespace) -> None:
    kind, pipeline, delay = CONFIGS[args.child]
    with tempfile.TemporaryDirectory() as tmp:
        project = write_project(Path(tmp), args.data, args.preload)
        proxy = None
        schema = "bench_" + uuid.uuid4().hex[:8]
        if kind == "sqlite":
            url = f"sqlite:///{tmp}/bench.db"
        else:
            port = 5432
            if delay:
                port = free_port()
                proxy = subprocess.Popen(
                    [sys.executable, str(HERE / "latency_proxy.py"), str(port), "5432", str(delay)]
                )
                time.sleep(0.5)
            url = PG.format(port=port) + f"?schema={schema}"
        try:
            sources = None
            if args.source == "memory":
                _, chain_id, _, _ = dataset(args.data)
                sources = {chain_id: MemorySource(args.data)}
            result = run_one(project, url, pipeline, args.batch_size, sources)
        finally:
            if proxy is not None:
                proxy.terminate()
            if kind == "postgres":
                import asyncpg

                async def drop() -> None:
                    conn = await asyncpg.connect(PG.format(port=5432))
                    await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
                    await conn.close()

                asyncio.run(drop())
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="transfers-1m")
    parser.add_argument("--only", action="append", choices=sorted(CONFIGS))
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--preload", choices=["always", "auto"], default="always")
    parser.add_argument(
        "--source",
        choices=["archive", "memory"],
        default="archive",
        help="memory: pages read before timing starts (the engine without the archive reader)",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    names = args.only or list(CONFIGS)
    print(f"data {args.data}, batch size {args.batch_size}")
    header = f"{'configuration':<24}{'events/s':>10}{'seconds':>9}{'commit s':>9}"
    header += f"{'waited s':>9}{'idle s':>8}{'peak MB':>8}{'cpu s':>7}{'reader':>7}{'machine':>8}"
    print(header)
    for name in names:
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--data",
                args.data,
                "--batch-size",
                str(args.batch_size),
                "--preload",
                args.preload,
                "--source",
                args.source,
                "--child",
                name,
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        )
        if out.returncode != 0:
            print(f"{name:<24} failed:\n{out.stderr[-2000:]}")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"{name:<24}{r['events_per_s']:>10,}{r['seconds']:>9}{r['commit_s']:>9}"
            f"{r['waited_on_writer_s']:>9}{r['writer_idle_s']:>8}{r['peak_rss_mb']:>8}"
            f"{r['cpu_s']:>7}{r['reader_cpu_s']:>7}{r['machine_cpu_s']:>8}",
            flush=True,
        )
        print("   ", json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
