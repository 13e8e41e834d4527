"""One indexer per database: a second one is refused instead of applying events twice.

On PostgreSQL the lock belongs to a database session, which can outlive a killed indexer by
the time its last statement takes: a new indexer waits for it before refusing.
"""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import pytest

from evmflow.engine import Indexer
from evmflow.errors import IndexBusyError
from evmflow.sources.base import Log
from evmflow.storage import postgres
from tests.conftest import PG_BASE_URL
from tests.support import probe
from tests.support.scripted import ListSource, transfer_log, write_project
from tests.test_pipeline import table_rows

ROWS = [("i1", "o", 1), ("i2", "o", 2), ("i3", "o", 3)]


def three_blocks(tmp_path: Path) -> tuple[Path, list[Log]]:
    """A project whose block N sets Item iN, and its logs."""
    project = write_project(tmp_path / "p", end_block=3)
    probe.reset({(b, 0): [("set", f"i{b}", "o", b)] for b in (1, 2, 3)})
    return project, [transfer_log(b, 0) for b in (1, 2, 3)]


async def start_paused(
    project: Path, url: str, logs: list[Log]
) -> tuple[Indexer, asyncio.Task, asyncio.Event]:
    """An indexer that holds the index and waits before its first commit until released."""
    release = asyncio.Event()

    async def hold(commit):
        await release.wait()

    first = Indexer(
        project, url, batch_size=1, before_commit=hold, sources={1: ListSource(logs, 3)}
    )
    running = asyncio.create_task(first.run())
    while first.measures.batches < 1:
        await asyncio.sleep(0.005)
    return first, running, release


async def test_a_second_indexer_on_the_same_database_is_refused(tmp_path, db_url, monkeypatch):
    monkeypatch.setattr(postgres, "LOCK_WAIT", 0.5)
    project, logs = three_blocks(tmp_path)
    first, running, release = await start_paused(project, db_url, logs)

    second = Indexer(project, db_url, sources={1: ListSource(logs, 3)})
    with pytest.raises(IndexBusyError) as refused:
        await second.run()
    assert "another evmflow process is indexing" in str(refused.value)

    release.set()
    await asyncio.wait_for(running, timeout=20)
    assert await table_rows(db_url, project) == ROWS

    # Once the first has finished, the database is free again.
    await Indexer(project, db_url, sources={1: ListSource(logs, 3)}).run()
    assert await table_rows(db_url, project) == ROWS


async def test_a_live_indexer_keeps_the_postgres_lock_through_the_wait(
    tmp_path, pg_url, monkeypatch, caplog
):
    monkeypatch.setattr(postgres, "LOCK_WAIT", 1.0)
    caplog.set_level(logging.INFO, logger="evmflow.storage.postgres")
    project, logs = three_blocks(tmp_path)
    first, running, release = await start_paused(project, pg_url, logs)
    assert first.storage is not None and first.storage._writer is not None
    holder_pid = first.storage._writer.get_server_pid()

    second = Indexer(project, pg_url, sources={1: ListSource(logs, 3)})
    began = time.monotonic()
    with pytest.raises(IndexBusyError) as refused:
        await second.run()
    waited = time.monotonic() - began

    assert 1.0 <= waited < 5.0
    holder = (
        rf"server process pid {holder_pid} \(application 'evmflow', "
        rf"client 127\.0\.0\.1:\d+, idle for \d+\.\d s\)"
    )
    assert re.fullmatch(
        rf"another evmflow process is indexing into {re.escape(pg_url)}: the index lock is "
        rf"held by {holder} and was not released within 1 s",
        refused.value.message,
    ), refused.value.message
    assert refused.value.hint == (
        "wait for it to finish or stop it; one indexer per database (or ?schema=) at a time. "
        "If that process has just died, its database session has not ended yet (the server "
        "ends it once the statement it was running finishes): run again later, or end the "
        f"session with SELECT pg_terminate_backend({holder_pid})"
    )
    waits = [r.getMessage() for r in caplog.records if "waiting up to" in r.getMessage()]
    assert len(waits) == 1
    assert re.fullmatch(
        rf"the index lock on {re.escape(pg_url)} is held by {holder}; waiting up to 1 s for "
        "it to be released",
        waits[0],
    ), waits[0]

    release.set()
    await asyncio.wait_for(running, timeout=20)
    assert await table_rows(pg_url, project) == ROWS


# A client that takes the index lock, starts a long statement and prints its server process
# id; killed during the statement, it leaves its session running on the server until the
# statement ends.
DYING_CLIENT = """
import asyncio, sys
import asyncpg

async def main():
    conn = await asyncpg.connect(
        sys.argv[1],
        server_settings={"search_path": sys.argv[2], "application_name": "dying-indexer"},
    )
    await conn.fetchval("SELECT pg_advisory_lock(hashtext('evmflow:' || current_schema()))")
    print(conn.get_server_pid(), flush=True)
    await conn.fetchval("SELECT pg_sleep(2.5)")

asyncio.run(main())
"""


async def _lock_is_free(pg_url: str) -> bool:
    schema = pg_url.split("schema=")[1]
    conn = await asyncpg.connect(PG_BASE_URL, server_settings={"search_path": schema})
    try:
        key = "hashtext('evmflow:' || current_schema())"
        taken = await conn.fetchval(f"SELECT pg_try_advisory_lock({key})")
        if taken:
            await conn.fetchval(f"SELECT pg_advisory_unlock({key})")
        return bool(taken)
    finally:
        await conn.close()


async def test_a_restart_right_after_a_kill_waits_for_the_dead_session(tmp_path, pg_url, caplog):
    caplog.set_level(logging.INFO, logger="evmflow.storage.postgres")
    project, logs = three_blocks(tmp_path)
    schema = pg_url.split("schema=")[1]
    async with asyncio.timeout(5):
        conn = await asyncpg.connect(PG_BASE_URL)
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        await conn.close()

    client = subprocess.Popen(
        [sys.executable, "-c", DYING_CLIENT, PG_BASE_URL, schema],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert client.stdout is not None
        dead_pid = int(client.stdout.readline())
        # Kill it once its server process is inside the long statement.
        conn = await asyncpg.connect(PG_BASE_URL)
        try:
            while not await conn.fetchval(
                "SELECT query LIKE '%pg_sleep%' AND state = 'active' FROM pg_stat_activity "
                "WHERE pid = $1",
                dead_pid,
            ):
                await asyncio.sleep(0.02)
        finally:
            await conn.close()
        client.send_signal(signal.SIGKILL)
        client.wait()
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()

    # The killed client's session still holds the lock: an attempt without waiting fails.
    assert not await _lock_is_free(pg_url)
    began = time.monotonic()
    await Indexer(project, pg_url, sources={1: ListSource(logs, 3)}).run()
    waited = time.monotonic() - began

    assert 0.2 <= waited < 10
    assert await table_rows(pg_url, project) == ROWS
    messages = [r.getMessage() for r in caplog.records]
    waits = [m for m in messages if "waiting up to" in m]
    assert len(waits) == 1
    assert re.fullmatch(
        rf"the index lock on {re.escape(pg_url)} is held by server process pid {dead_pid} "
        r"\(application 'dying-indexer', client 127\.0\.0\.1:\d+, running a statement for "
        r"\d+\.\d s\); waiting up to 30 s for it to be released",
        waits[0],
    ), waits[0]
    assert [m for m in messages if m.startswith("took the index lock")] != []
