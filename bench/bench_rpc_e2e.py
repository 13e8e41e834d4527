"""End-to-end over JSON-RPC: ERC-20 transfers from a local anvil node into PostgreSQL.

Anvil serves a dataset of ``gen_transfers.py --dump-state`` (bench/data/NAME.state.json);
each run is a fresh process that runs the Indexer from process start to exit over RPC, with
the workload of bench_engine.py (both Accounts loaded and written back, one Transfer row per
event), into a fresh PostgreSQL schema dropped afterwards. The table shows events/s of the
whole process (interpreter start, imports, connecting, fetching, decoding, handlers, commits,
drain), the child's peak RSS (ru_maxrss), its CPU seconds and anvil's CPU seconds meanwhile.
Every run checks the Transfer table holds exactly the dataset's event count.

    python bench/bench_rpc_e2e.py --data transfers-100k
    python bench/bench_rpc_e2e.py --data transfers-1m --setting 2000:4 --setting 50:4
    python bench/bench_rpc_e2e.py --data transfers-100k --setting 20:4 --profile /tmp/e2e.prof

A setting is MAX_BLOCK_RANGE:CONCURRENCY of the chain's rpc section (the sets have 1,000
logs a block). ``--profile`` runs the child under cProfile and prints its top functions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
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

from bench_engine import HANDLERS, PG, SCHEMA  # noqa: E402  the same workload

from tests.support.anvil import Anvil  # noqa: E402

DEFAULT_SETTINGS = ["2000:4", "100:4", "20:4", "20:8", "5:8"]
PG_URL = PG.format(port=5432)


def write_project(folder: Path, meta: dict, url: str, span: int, concurrency: int) -> Path:
    abi = ROOT / "examples" / "erc20-mainnet" / "abis" / "ERC20.json"
    (folder / "schema.graphql").write_text(SCHEMA)
    (folder / "handlers.py").write_text(HANDLERS)
    rpc = {"urls": [url], "max_block_range": span, "concurrency": concurrency}
    config = {
        "name": "bench-rpc",
        "chains": [
            {
                "id": meta["chain_id"],
                "start_block": meta["first_block"],
                "end_block": meta["last_block"],
                "rpc": rpc,
            }
        ],
        "contracts": [
            {"name": "ERC20", "abi": str(abi), "address": meta["token"], "events": ["Transfer"]}
        ],
    }
    (folder / "evmflow.yaml").write_text(json.dumps(config))
    return folder


# --- the child: one run, from its own start to its exit ----------------------------------------


def child(args: argparse.Namespace) -> None:
    from evmflow.engine import Indexer

    options = {"reset": True, "batch_size": args.batch_size}
    if args.max_uncommitted:
        options["max_uncommitted"] = args.max_uncommitted
    if args.cache_limit:
        options["cache_limit"] = args.cache_limit
    indexer = Indexer(args.child, args.db, **options)
    profile = args.profile
    if profile:
        import cProfile

        cProfile.runctx("asyncio.run(indexer.run())", globals(), locals(), profile)
    else:
        asyncio.run(indexer.run())
    m, w = indexer.measures, indexer.writer
    assert w is not None
    print(
        json.dumps(
            {
                "events": m.events,
                "decode_s": round(m.decode_seconds, 2),
                "preload_s": round(m.preload_seconds, 2),
                "handler_s": round(m.handler_seconds, 2),
                "commit_s": round(w.commit_seconds, 2),
                "commits": w.commits,
                "waited_on_writer_s": round(m.waited_on_writer_seconds, 2),
                "writer_idle_s": round(w.idle_seconds, 2),
            }
        )
    )


# --- the parent ---------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """user + system CPU seconds a running process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _pg(sql: str) -> object:
    import asyncpg

    conn = await asyncpg.connect(PG_URL)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


def run_child(command: list[str]) -> tuple[int, str, str, float, object]:
    """Run ``command`` to its exit: code, stdout, stderr, wall seconds, its own rusage."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=err)
        # wait4 rather than Popen.wait: it gives this child's own resource use.
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return process.returncode, out.read().decode(), err.read().decode(), seconds, usage


def run_one(node: Anvil, meta: dict, setting: str, args: argparse.Namespace) -> dict:
    span, concurrency = (int(x) for x in setting.split(":"))
    schema = "bench_rpc_" + uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory() as tmp:
        project = write_project(Path(tmp), meta, node.url, span, concurrency)
        command = [sys.executable, __file__, "--child", str(project), "--db"]
        command += [f"{PG_URL}?schema={schema}", "--batch-size", str(args.batch_size)]
        command += ["--max-uncommitted", str(args.max_uncommitted or 0)]
        command += ["--cache-limit", str(args.cache_limit or 0)]
        if args.profile:
            command += ["--profile", args.profile]
        assert node._process is not None
        anvil_pid = node._process.pid
        anvil_cpu = cpu_seconds(anvil_pid)
        code, stdout, stderr, seconds, usage = run_child(command)
        anvil_cpu = cpu_seconds(anvil_pid) - anvil_cpu
        try:
            if code != 0:
                raise SystemExit(f"{setting}: the child exited {code}:\n{stderr[-3000:]}")
            result = json.loads(stdout.strip().splitlines()[-1])
            rows = asyncio.run(_pg(f'SELECT count(*) FROM "{schema}"."Transfer"'))
            if result["events"] != meta["events"] or rows != meta["events"]:
                raise SystemExit(
                    f"{setting}: {result['events']} events handled, {rows} Transfer rows; "
                    f"expected {meta['events']}"
                )
        finally:
            asyncio.run(_pg(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    result.update(
        setting=setting,
        seconds=round(seconds, 2),
        events_per_s=round(meta["events"] / seconds),
        child_cpu_s=round(usage.ru_utime + usage.ru_stime, 2),  # type: ignore[attr-defined]
        anvil_cpu_s=round(anvil_cpu, 2),
        peak_rss_mb=round(usage.ru_maxrss / 1024),  # type: ignore[attr-defined]
    )
    return result


def print_profile(path: str, top: int) -> None:
    import pstats

    stats = pstats.Stats(path)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="transfers-100k")
    parser.add_argument("--setting", action="append", help="MAX_BLOCK_RANGE:CONCURRENCY")
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument(
        "--max-uncommitted", type=int, help="the engine option (default: evmflow's)"
    )
    parser.add_argument(
        "--cache-limit", type=int, help="Indexer(cache_limit=...): entities kept in memory"
    )
    parser.add_argument("--runs", type=int, default=1, help="runs per setting; each is shown")
    parser.add_argument("--profile", help="cProfile the child into this file (one setting)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    meta = json.loads((HERE / "data" / f"{args.data}.meta.json").read_text())
    state = HERE / "data" / meta["state_file"]
    settings = args.setting or DEFAULT_SETTINGS
    started = time.perf_counter()
    with Anvil(chain_id=meta["chain_id"], load_state=state, start_timeout=300) as node:
        print(
            f"data {args.data}: {meta['events']:,} events in blocks {meta['first_block']}-"
            f"{meta['last_block']}; anvil loaded its state in "
            f"{time.perf_counter() - started:.1f} s (not counted); batch size {args.batch_size}, "
            f"max_uncommitted {args.max_uncommitted or 'default'}, "
            f"cache_limit {args.cache_limit or 'default'}"
        )
        header = f"{'range:conc':<12}{'events/s':>10}{'seconds':>9}{'child cpu':>10}"
        header += f"{'anvil cpu':>10}{'commit s':>9}{'handler s':>10}{'peak MB':>8}"
        print(header, flush=True)
        for setting in settings:
            for _ in range(args.runs):
                r = run_one(node, meta, setting, args)
                print(
                    f"{setting:<12}{r['events_per_s']:>10,}{r['seconds']:>9}"
                    f"{r['child_cpu_s']:>10}{r['anvil_cpu_s']:>10}{r['commit_s']:>9}"
                    f"{r['handler_s']:>10}{r['peak_rss_mb']:>8}",
                    flush=True,
                )
                print("   ", json.dumps(r), flush=True)
    if args.profile:
        print_profile(args.profile, 25)


if __name__ == "__main__":
    main()
