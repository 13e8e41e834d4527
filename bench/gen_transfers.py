"""Generate a dataset of ERC-20 Transfer events on a local anvil node, once, for benchmarks.

    python bench/gen_transfers.py                      # 1,000,000 events, 1,000 a block
    python bench/gen_transfers.py --events 100000 --dump-state

Writes, under bench/data (git-ignored):

- ``transfers-1m.logs.jsonl.gz``: every log, one ``eth_getLogs`` result object a line, exactly
  as anvil returned it, sorted by block and log index;
- ``transfers-1m.blocks.jsonl.gz``: ``eth_getBlockByNumber(n, false)`` of every block with logs;
- ``transfers-1m.meta.json``: token address, block range, counts, seed, chain id;
- with ``--dump-state``: ``transfers-1m.state.json``, anvil's state dump; start a node on it
  with ``Anvil(load_state=...)`` (tests/support/anvil.py) to benchmark the RPC source on the same
  blocks, hashes and logs.

The events come from BenchToken.spam (see tests/support/contracts): one transaction emits up
to ``--events-per-tx`` Transfer logs without changing state, so a million events take minutes.
"""

from __future__ import annotations

import argparse
import gzip
import os
import sys
import time
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.anvil import (  # noqa: E402
    TRANSFER_TOPIC,
    Anvil,
    BenchToken,
    spam_transfers,
)

DATA_DIR = REPO / "bench" / "data"
CHAIN_ID = 31337


def dataset_name(events: int) -> str:
    """1_000_000 -> 'transfers-1m', 250_000 -> 'transfers-250k'."""
    for size, suffix in ((1_000_000, "m"), (1_000, "k")):
        if events >= size and events % size == 0:
            return f"transfers-{events // size}{suffix}"
    return f"transfers-{events}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="Transfer events in all")
    parser.add_argument("--per-block", type=int, default=1_000, help="events in each block")
    parser.add_argument("--events-per-tx", type=int, default=1_000, help="events a transaction")
    parser.add_argument("--pool", type=int, default=1_000, help="distinct from/to addresses")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--name", help="file name prefix (default: transfers-<events>)")
    parser.add_argument("--out-dir", type=Path, default=DATA_DIR)
    parser.add_argument(
        "--dump-state",
        action="store_true",
        help="also write anvil's state dump (<name>.state.json)",
    )
    parser.add_argument(
        "--fetch-blocks", type=int, default=20, help="blocks per eth_getLogs call while fetching"
    )
    parser.add_argument("--gzip-level", type=int, default=4)
    return parser.parse_args(argv)


def write_archive(node: Anvil, token: str, first: int, last: int, args, prefix: Path) -> int:
    """Fetch the logs and headers of ``first..last`` and write them; returns the log count."""
    logs_path = prefix.with_name(prefix.name + ".logs.jsonl.gz")
    blocks_path = prefix.with_name(prefix.name + ".blocks.jsonl.gz")
    written = 0
    # Write under a temporary name so that an interrupted run leaves no half dataset.
    tmp_logs = logs_path.with_name(logs_path.name + ".part")
    tmp_blocks = blocks_path.with_name(blocks_path.name + ".part")
    with gzip.open(tmp_logs, "wb", compresslevel=args.gzip_level) as out:
        for start in range(first, last + 1, args.fetch_blocks):
            end = min(start + args.fetch_blocks - 1, last)
            logs = node.get_logs(start, end, token, [TRANSFER_TOPIC])
            out.write(b"".join(orjson.dumps(log) + b"\n" for log in logs))
            written += len(logs)
    with gzip.open(tmp_blocks, "wb", compresslevel=args.gzip_level) as out:
        for start in range(first, last + 1, 100):
            numbers = range(start, min(start + 100, last + 1))
            blocks = node.batch([("eth_getBlockByNumber", [hex(n), False]) for n in numbers])
            out.write(b"".join(orjson.dumps(block) + b"\n" for block in blocks))
    os.replace(tmp_logs, logs_path)
    os.replace(tmp_blocks, blocks_path)
    return written


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.events < 1 or args.per_block < 1:
        print("--events and --per-block must be at least 1", file=sys.stderr)
        return 2
    name = args.name or dataset_name(args.events)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    prefix = args.out_dir / name
    state_path = prefix.with_name(name + ".state.json") if args.dump_state else None
    if state_path is not None and state_path.exists():
        state_path.unlink()
    blocks = -(-args.events // args.per_block)

    started = time.perf_counter()
    with Anvil(chain_id=CHAIN_ID, dump_state=state_path) as node:
        token = BenchToken.deploy(node)

        def progress(done: int, total: int) -> None:
            if done % max(1, total // 10) == 0 or done == total:
                elapsed = time.perf_counter() - started
                print(f"  mined {done}/{total} blocks ({elapsed:.1f}s)", flush=True)

        result = spam_transfers(
            token,
            args.events,
            blocks,
            seed=args.seed,
            pool=args.pool,
            events_per_tx=args.events_per_tx,
            progress=progress,
        )
        generated = time.perf_counter()
        written = write_archive(
            node, token.address, result.first_block, result.last_block, args, prefix
        )
        fetched = time.perf_counter()
        if written != args.events:
            print(f"expected {args.events} logs, fetched {written}", file=sys.stderr)
            return 1
        meta = {
            "events": args.events,
            "chain_id": CHAIN_ID,
            "token": token.address,
            "transfer_topic": TRANSFER_TOPIC,
            "first_block": result.first_block,
            "last_block": result.last_block,
            "per_block": args.per_block,
            "pool": args.pool,
            "seed": args.seed,
            "transactions": result.transactions,
            "state_file": state_path.name if state_path else None,
        }
        prefix.with_name(name + ".meta.json").write_bytes(
            orjson.dumps(meta, option=orjson.OPT_INDENT_2)
        )
    finished = time.perf_counter()  # includes anvil writing its state dump on exit

    print(f"{args.events:,} Transfer events in blocks {result.first_block}..{result.last_block}")
    print(f"  generate on anvil:      {generated - started:7.1f} s")
    print(f"  fetch and write archive:{fetched - generated:7.1f} s")
    if state_path is not None:
        size = state_path.stat().st_size / 2**20
        print(f"  stop and dump state:    {finished - fetched:7.1f} s ({size:,.0f} MiB)")
    print(f"  total:                  {finished - started:7.1f} s")
    for suffix in (".logs.jsonl.gz", ".blocks.jsonl.gz", ".meta.json"):
        path = prefix.with_name(name + suffix)
        print(f"  wrote {path} ({path.stat().st_size / 2**20:,.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
