"""``evmflow run`` killed with SIGKILL at random moments, restarted until it finishes.

The data is a generated archive in the shape an RPC node returns: tens of thousands of
ERC-20 Transfers over two thousand blocks, plus ERC-721 transfers and other events that must
be ignored, so a run lasts long enough for kills to land during startup, fetching, handling
and commits. After every kill the database must hold exactly what the committed progress
says (every batch whole or absent, nothing twice), progress must never go back, and the
final tables must equal those of an uninterrupted run and the values computed from the raw
archive.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import (
    EXAMPLE_DIR,
    TRANSFER_TOPIC,
    assert_erc20_index,
    assert_ran,
    chain_progress,
    dump_db,
    erc20_index,
    erc20_index_in_db,
    erc20_transfers,
    run_evmflow,
    start_evmflow,
    wipe_db,
)

CHAIN_ID = 5
FIRST_BLOCK = 3_000_000
BLOCKS = 2_000
LOGS = 40_000
KILLS_PER_BACKEND = 20  # on each backend
MAX_ROUNDS = 40  # a round that ends before enough kills starts over; keep going


# --- the generated archive ---------------------------------------------------------------------


def _hash(*parts: object) -> str:
    return "0x" + hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()


def _address(name: str) -> str:
    return "0x" + hashlib.sha256(name.encode()).hexdigest()[:40]


def _word(address: str) -> str:
    return "0x" + address[2:].rjust(64, "0")


def write_archive(prefix: Path, seed: int = 20240607) -> None:
    """``prefix``.logs.jsonl.gz and .blocks.jsonl.gz: LOGS logs over BLOCKS linked blocks.

    The logs carry no blockTimestamp, so timestamps must come from the blocks file.
    """
    rng = random.Random(seed)
    tokens = [_address(f"token-{i}") for i in range(25)]
    holders = ["0x" + "0" * 40] + [_address(f"holder-{i}") for i in range(400)]
    with (
        gzip.open(f"{prefix}.logs.jsonl.gz", "wt", compresslevel=1) as logs,
        gzip.open(f"{prefix}.blocks.jsonl.gz", "wt", compresslevel=1) as blocks,
    ):
        for b in range(BLOCKS):
            number = FIRST_BLOCK + b
            block_hash = _hash("block", number)
            header = {
                "number": hex(number),
                "hash": block_hash,
                "parentHash": _hash("block", number - 1),
                "timestamp": hex(1_700_000_000 + 12 * b),
            }
            blocks.write(json.dumps(header) + "\n")
            in_block = LOGS // BLOCKS + (1 if b < LOGS % BLOCKS else 0)
            for index in range(in_block):
                roll = rng.random()
                if roll < 0.02:  # ERC-721: same topic0, token id in a fourth topic, no data
                    topics = [
                        TRANSFER_TOPIC,
                        _word(rng.choice(holders)),
                        _word(rng.choice(holders)),
                        "0x" + f"{rng.randrange(10**6):064x}",
                    ]
                    data = "0x"
                elif roll < 0.04:  # some other event
                    topics = [_hash("Approval-like"), _word(rng.choice(holders))]
                    data = "0x" + f"{rng.randrange(2**64):064x}"
                else:
                    topics = [
                        TRANSFER_TOPIC,
                        _word(rng.choice(holders)),
                        _word(rng.choice(holders)),
                    ]
                    data = "0x" + f"{rng.randrange(2**96):064x}"
                log = {
                    "address": rng.choice(tokens),
                    "topics": topics,
                    "data": data,
                    "blockNumber": hex(number),
                    "blockHash": block_hash,
                    "transactionHash": _hash("tx", number, index // 4),
                    "transactionIndex": hex(index // 4),
                    "logIndex": hex(index),
                    "removed": False,
                }
                logs.write(json.dumps(log) + "\n")


@dataclass
class Archive:
    prefix: Path
    transfers: list[tuple]


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Archive:
    prefix = tmp_path_factory.mktemp("archive") / "synthetic"
    write_archive(prefix)
    transfers = erc20_transfers(
        Path(f"{prefix}.logs.jsonl.gz"),
        Path(f"{prefix}.blocks.jsonl.gz"),
        CHAIN_ID,
        FIRST_BLOCK,
        FIRST_BLOCK + BLOCKS - 1,
    )
    return Archive(prefix, transfers)


@pytest.fixture()
def project(tmp_path: Path, archive: Archive) -> Path:
    """The example's schema and handlers over the generated archive."""
    root = tmp_path / "synthetic-erc20"
    (root / "abis").mkdir(parents=True)
    for name in ("schema.graphql", "handlers.py", "abis/ERC20.json"):
        (root / name).write_bytes((EXAMPLE_DIR / name).read_bytes())
    (root / "evmflow.yaml").write_text(
        f"""name: synthetic-erc20
chains:
  - id: {CHAIN_ID}
    start_block: {FIRST_BLOCK}
    end_block: {FIRST_BLOCK + BLOCKS - 1}
    archive:
      path: {archive.prefix}
contracts:
  - name: ERC20
    abi: abis/ERC20.json
    events: [Transfer]
"""
    )
    return root


def test_the_generated_archive_mixes_erc20_transfers_with_logs_to_ignore(archive: Archive):
    assert 0.9 * LOGS < len(archive.transfers) < 0.99 * LOGS
    assert {row[5] for row in archive.transfers} == set(range(FIRST_BLOCK, FIRST_BLOCK + BLOCKS))


# --- killing -----------------------------------------------------------------------------------


def assert_committed_state_is_whole(url: str, archive: Archive) -> int:
    """The database holds exactly the effect of every Transfer up to its committed block.

    Returns that block (FIRST_BLOCK - 1 when nothing, not even the tables, is committed).
    """
    dump = dump_db(url)
    progress = chain_progress(dump)
    if not progress:
        assert not dump.get("Transfer") and not dump.get("Token"), "rows without progress"
        return FIRST_BLOCK - 1
    block, events = progress[CHAIN_ID]
    expected = erc20_index(archive.transfers, up_to_block=block)
    assert events == len(expected.transfers), f"progress says {events} events at block {block}"
    assert_erc20_index(erc20_index_in_db(dump), expected)
    return block


def run_with_kills(
    project: Path,
    url: str,
    archive: Archive,
    rng: random.Random,
    kills_wanted: int,
    log: Path,
    blocks_at_kills: list[int],
) -> int:
    """One backfill from an empty database, killed at random until it exits 0 by itself.

    Stops killing after ``kills_wanted`` kills; returns the number of kills. Each kill adds
    the committed block it left to ``blocks_at_kills``.
    """
    kills = 0
    committed = FIRST_BLOCK - 1
    while True:
        batch_size = rng.choice(["97", "500", "1500"])
        process = start_evmflow(
            "run", project, "--db", url, "--batch-size", batch_size, "--quiet", output=log
        )
        try:
            if kills < kills_wanted:
                try:
                    code = process.wait(timeout=rng.uniform(0.6, 2.2))
                except subprocess.TimeoutExpired:
                    os.kill(process.pid, signal.SIGKILL)
                    process.wait()
                    kills += 1
                    block = assert_committed_state_is_whole(url, archive)
                    assert block >= committed, f"progress went back from {committed} to {block}"
                    committed = block
                    blocks_at_kills.append(block)
                    continue
            else:
                code = process.wait(timeout=180)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        assert code == 0, f"evmflow exited {code}:\n{log.read_text()}"
        return kills


def test_sigkill_at_random_moments_loses_nothing_and_applies_nothing_twice(
    project: Path, db_url: str, backend: str, archive: Archive, tmp_path: Path
):
    expected = erc20_index(archive.transfers)
    assert_ran(run_evmflow("run", project, "--db", db_url, "--quiet"))
    uninterrupted = dump_db(db_url)
    assert_erc20_index(erc20_index_in_db(uninterrupted), expected)

    rng = random.Random(f"crash-{backend}")
    blocks_at_kills: list[int] = []
    rounds = 0
    while len(blocks_at_kills) < KILLS_PER_BACKEND and rounds < MAX_ROUNDS:
        # A round that finished before enough kills starts over from an empty database.
        wipe_db(db_url)
        run_with_kills(
            project,
            db_url,
            archive,
            rng,
            KILLS_PER_BACKEND - len(blocks_at_kills),
            tmp_path / "run.log",
            blocks_at_kills,
        )
        rounds += 1
        assert dump_db(db_url) == uninterrupted, (
            f"tables differ after round {rounds}; kills left blocks {blocks_at_kills}"
        )

    assert len(blocks_at_kills) >= KILLS_PER_BACKEND, (
        f"only {len(blocks_at_kills)} kills landed in {rounds} rounds: {blocks_at_kills}"
    )
