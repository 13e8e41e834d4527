"""One indexer per database: a second one is refused instead of applying events twice."""

from __future__ import annotations

import asyncio

import pytest

from evmflow.engine import Indexer
from evmflow.errors import IndexBusyError
from tests.support import probe
from tests.support.scripted import ListSource, transfer_log, write_project
from tests.test_pipeline import table_rows


async def test_a_second_indexer_on_the_same_database_is_refused(tmp_path, db_url):
    project = write_project(tmp_path / "p", end_block=3)
    probe.reset({(b, 0): [("set", f"i{b}", "o", b)] for b in (1, 2, 3)})
    logs = [transfer_log(b, 0) for b in (1, 2, 3)]
    release = asyncio.Event()

    async def hold(commit):
        await release.wait()

    first = Indexer(
        project, db_url, batch_size=1, before_commit=hold, sources={1: ListSource(logs, 3)}
    )
    running = asyncio.create_task(first.run())
    while first.measures.batches < 1:
        await asyncio.sleep(0.005)

    second = Indexer(project, db_url, sources={1: ListSource(logs, 3)})
    with pytest.raises(IndexBusyError) as refused:
        await second.run()
    assert "another evmflow process is indexing" in str(refused.value)

    release.set()
    await asyncio.wait_for(running, timeout=20)
    assert await table_rows(db_url, project) == [("i1", "o", 1), ("i2", "o", 2), ("i3", "o", 3)]

    # Once the first has finished, the database is free again.
    await Indexer(project, db_url, sources={1: ListSource(logs, 3)}).run()
    assert await table_rows(db_url, project) == [("i1", "o", 1), ("i2", "o", 2), ("i3", "o", 3)]
