"""The rules of the pipeline (DESIGN.md): reads never wait for a commit and always see the
latest state, commits keep order, failures store nothing of the failed commit."""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import uuid

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evmflow.engine import Indexer
from evmflow.errors import WriterError
from tests.support import probe
from tests.support.scripted import ListSource, transfer_log, write_project

PG = "postgresql://postgres@127.0.0.1:5432/postgres"


def sqlite_url(tmp_path, name="index.db"):
    return f"sqlite:///{tmp_path / name}"


async def pg_url():
    schema = "t_" + uuid.uuid4().hex[:12]
    return f"{PG}?schema={schema}", schema


async def drop_pg(schema):
    conn = await asyncpg.connect(PG)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def db_url(request, tmp_path):
    if request.param == "sqlite":
        yield sqlite_url(tmp_path)
        return
    url, schema = await pg_url()
    yield url
    await drop_pg(schema)


async def table_rows(indexer_or_url, project_dir, entity="Item"):
    from evmflow.project import load_project
    from evmflow.storage import open_storage

    url = indexer_or_url
    project = load_project(project_dir)
    storage = open_storage(url, project.schema)
    await storage.open()
    try:
        return await storage.read_table(entity)
    finally:
        await storage.close()


def one_event_per_block(program):
    blocks = sorted({b for b, _ in program})
    return [transfer_log(b, i) for b, i in sorted(program)], max(blocks)


async def test_reads_see_an_uncommitted_batch_without_waiting_for_its_commit(tmp_path, db_url):
    project = write_project(tmp_path / "p", end_block=2)
    probe.reset(
        {
            (1, 0): [("set", "a", "alice", 1)],
            (2, 0): [("get", "a"), ("set", "a", "alice", 2)],
        }
    )
    logs, last = one_event_per_block(probe.PROGRAM)
    released = asyncio.Event()
    commits = []

    async def gate(commit):
        commits.append(commit.description)
        if len(commits) == 1:
            # Hold the first commit until batch 2 has been handled. If batch 2's read waited
            # for this commit, the wait below would time out.
            async def batch_two_handled():
                while indexer.measures.batches < 2:
                    await asyncio.sleep(0.005)

            await asyncio.wait_for(batch_two_handled(), timeout=10)
            released.set()

    indexer = Indexer(
        project, db_url, batch_size=1, before_commit=gate, sources={1: ListSource(logs, last)}
    )
    await asyncio.wait_for(indexer.run(), timeout=30)

    assert released.is_set()
    assert probe.READS == [(2, 0, ("get", "a"), ("a", "alice", 1))]
    assert await table_rows(db_url, project) == [("a", "alice", 2)]


async def test_get_where_overlays_uncommitted_batches_on_database_rows(tmp_path, db_url):
    project = write_project(tmp_path / "p", end_block=6)
    # Blocks 1-2 are committed before the rest starts (first run); blocks 3-6 run with every
    # commit held back until all four batches are handled, so they all read in-flight state.
    probe.reset(
        {
            (1, 0): [("set", "db_only", "bob", 5), ("set", "moves_away", "bob", 1)],
            (2, 0): [("set", "deleted", "bob", 2), ("set", "recreated", "bob", 3)],
        }
    )
    logs, _ = one_event_per_block(probe.PROGRAM)
    first = Indexer(project, db_url, batch_size=1, sources={1: ListSource(logs, 2)})
    first.project.config.chains[0].end_block = 2
    await first.run()

    program = {
        (3, 0): [
            ("set", "moves_in", "bob", 7),
            ("set", "moves_away", "carol", 1),
            ("delete", "deleted"),
            ("delete", "recreated"),
        ],
        (4, 0): [("set", "recreated", "bob", 9), ("where", "owner", "bob")],
        (5, 0): [("delete", "recreated"), ("where", "owner", "bob")],
        (6, 0): [
            ("set", "recreated", "dave", 4),
            ("where", "owner", "bob"),
            ("where", "score__gte", 4),
            ("where", "owner__in", ["carol", "dave"]),
            ("get", "recreated"),
            ("get", "deleted"),
        ],
    }
    probe.reset(program)
    logs, _ = one_event_per_block(program)
    held = []

    async def gate(commit):
        held.append(commit.description)
        while indexer.measures.batches < 4:
            await asyncio.sleep(0.005)

    indexer = Indexer(
        project, db_url, batch_size=1, before_commit=gate, sources={1: ListSource(logs, 6)}
    )
    await asyncio.wait_for(indexer.run(), timeout=30)

    reads = [(block, op, seen) for block, _, op, seen in probe.READS]
    assert reads == [
        (4, ("where", "owner", "bob"), ["db_only", "moves_in", "recreated"]),
        (5, ("where", "owner", "bob"), ["db_only", "moves_in"]),
        (6, ("where", "owner", "bob"), ["db_only", "moves_in"]),
        (6, ("where", "score__gte", 4), ["db_only", "moves_in", "recreated"]),
        (6, ("where", "owner__in", ["carol", "dave"]), ["moves_away", "recreated"]),
        (6, ("get", "recreated"), ("recreated", "dave", 4)),
        (6, ("get", "deleted"), None),
    ]
    assert await table_rows(db_url, project) == [
        ("db_only", "bob", 5),
        ("moves_away", "carol", 1),
        ("moves_in", "bob", 7),
        ("recreated", "dave", 4),
    ]


@pytest.mark.parametrize("pause", [False, True])
@pytest.mark.parametrize("preload", ["always", "auto"])
async def test_preload_reads_a_batch_of_gets_with_one_query_per_entity(tmp_path, preload, pause):
    project = write_project(tmp_path / "p", end_block=2)
    config = project / "evmflow.yaml"
    config.write_text(
        json.dumps({**json.loads(config.read_text()), "engine": {"preload": preload}})
    )
    ids = [f"id{i}" for i in range(40)]
    probe.reset({(1, i): [("set", x, "o", i)] for i, x in enumerate(ids)})
    logs, _ = one_event_per_block(probe.PROGRAM)
    url = sqlite_url(tmp_path)
    first = Indexer(project, url, sources={1: ListSource(logs, 1)})
    first.project.config.chains[0].end_block = 1
    await first.run()

    # Batch two: 40 handlers each read a different id from the database (with auto, the
    # first read misses memory and preloads the rest of the batch).
    # With pause, each handler first awaits asyncio.sleep(0), before its read.
    program = {(2, i): [("pause",)] * pause + [("get", x)] for i, x in enumerate(ids)}
    probe.reset(program)
    logs, _ = one_event_per_block(program)
    statements = []

    async def on_open(storage):
        storage._reader.set_trace_callback(statements.append)

    second = Indexer(project, url, sources={1: ListSource(logs, 2)}, on_storage_open=on_open)
    await second.run()

    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) == 1
    assert '"Item"' in selects[0]
    assert [seen for *_, seen in probe.READS] == [(x, "o", i) for i, x in enumerate(ids)]


@pytest.mark.parametrize("pipeline", [True, False])
async def test_failed_commit_stores_nothing_of_it_and_keeps_earlier_batches(
    tmp_path, db_url, pipeline
):
    project = write_project(tmp_path / "p", end_block=4)
    probe.reset(
        {
            (1, 0): [("set", "a", "x", 1)],
            (2, 0): [("set", "b", "x", 2)],
            (3, 0): [("set", "c", "x", 666), ("set", "a", "x", 10)],
            (4, 0): [("set", "d", "x", 4)],
        }
    )
    logs, _ = one_event_per_block(probe.PROGRAM)
    # An injected constraint the third batch violates.
    prepared = Indexer(project, db_url, sources={1: ListSource([], 0)})
    prepared.project.config.chains[0].end_block = 0
    await prepared.run()
    if db_url.startswith("sqlite"):
        conn = sqlite3.connect(db_url.removeprefix("sqlite:///"))
        conn.execute(
            'CREATE TRIGGER no_666 BEFORE INSERT ON "Item" WHEN NEW.score = 666 '
            "BEGIN SELECT RAISE(ABORT, 'injected constraint'); END"
        )
        conn.commit()
        conn.close()
    else:
        schema = db_url.split("schema=")[1]
        conn = await asyncpg.connect(PG)
        await conn.execute(f'ALTER TABLE "{schema}"."Item" ADD CHECK (score <> 666)')
        await conn.close()

    async def slow(commit):
        await asyncio.sleep(0.01)

    indexer = Indexer(
        project,
        db_url,
        batch_size=1,
        before_commit=slow,
        pipeline=pipeline,
        sources={1: ListSource(logs, 4)},
    )
    with pytest.raises(WriterError) as failure:
        await indexer.run()

    assert "chain 1 blocks 3-3" in str(failure.value)
    from evmflow.project import load_project
    from evmflow.storage import open_storage

    storage = open_storage(db_url, load_project(project).schema)
    await storage.open()
    progress = await storage.read_progress()
    await storage.close()
    # Without the pipeline every batch is its own commit; with it, queued batches are merged
    # into one commit, so the failure can take batches 1-2 with it. Either way the database
    # holds exactly the batches before its committed block, and nothing of block 3.
    rows = await table_rows(db_url, project)
    expected = {0: [], 1: [("a", "x", 1)], 2: [("a", "x", 1), ("b", "x", 2)]}
    if not pipeline:
        assert progress[1].block == 2
    assert rows == expected[progress[1].block]


# -- property: the pipelined engine reads and stores exactly what a serial run would ----------

IDS = ["a", "b", "c", "d"]
OWNERS = ["x", "y"]

op_strategy = st.one_of(
    st.tuples(st.just("set"), st.sampled_from(IDS), st.sampled_from(OWNERS), st.integers(0, 9)),
    st.tuples(st.just("delete"), st.sampled_from(IDS)),
    st.tuples(st.just("get"), st.sampled_from(IDS)),
    st.tuples(st.just("where"), st.just("owner"), st.sampled_from(OWNERS)),
    st.tuples(st.just("where"), st.just("score__gt"), st.integers(0, 9)),
    st.tuples(st.just("where"), st.just("owner__in"), st.lists(st.sampled_from(OWNERS))),
)


def serial_model(program):
    """The reference: a plain dict, every operation applied in event order."""
    state: dict[str, tuple] = {}
    reads = []
    snapshots = {}
    for key in sorted(program):
        for op in program[key]:
            if op[0] == "set":
                state[op[1]] = (op[1], op[2], op[3])
            elif op[0] == "delete":
                state.pop(op[1], None)
            elif op[0] == "get":
                reads.append((*key, op, state.get(op[1])))
            else:
                field, value = op[1], op[2]
                if field == "owner":
                    hits = [k for k, v in state.items() if v[1] == value]
                elif field == "score__gt":
                    hits = [k for k, v in state.items() if v[2] > value]
                else:
                    hits = [k for k, v in state.items() if v[1] in value]
                reads.append((*key, op, sorted(hits)))
        snapshots[key[0]] = sorted(state.values())
    return reads, snapshots


programs = st.dictionaries(
    st.tuples(st.integers(1, 12), st.integers(0, 2)),
    st.lists(op_strategy, min_size=1, max_size=4),
    min_size=1,
    max_size=20,
)


async def _run_property(tmp_path, url, program, seed, batch_size, preload="always"):
    project = write_project(tmp_path / f"p{seed}", end_block=12)
    if preload != "always":
        import json

        config = json.loads((project / "evmflow.yaml").read_text())
        config["engine"] = {"preload": preload}
        (project / "evmflow.yaml").write_text(json.dumps(config))
    probe.reset(program)
    expected_reads, snapshots = serial_model(program)
    logs = [transfer_log(b, i) for b, i in sorted(program)]
    rng = random.Random(seed)
    mismatches = []

    from evmflow.project import load_project
    from evmflow.storage import open_storage

    checker = open_storage(url, load_project(project).schema)
    await checker.open()

    async def delay(commit):
        await asyncio.sleep(rng.choice([0, 0, 0.001, 0.005]))
        # Before each commit, the database holds exactly the state after the last committed
        # batch: read it through a connection of its own.
        block = (await checker.read_progress())[1].block
        rows = await checker.read_table("Item")
        want = snapshot_at(snapshots, block)
        if rows != want:
            mismatches.append((block, rows, want))

    indexer = Indexer(
        project,
        url,
        batch_size=batch_size,
        before_commit=delay,
        sources={1: ListSource(logs, 12, page_blocks=rng.choice([1, 3]))},
    )
    try:
        await indexer.run()
    finally:
        await checker.close()
    assert probe.READS == expected_reads
    assert mismatches == []
    assert await table_rows(url, project) == snapshot_at(snapshots, 12)


def snapshot_at(snapshots, block):
    keys = [b for b in snapshots if b <= block]
    return snapshots[max(keys)] if keys else []


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(program=programs, seed=st.integers(0, 10**6), batch_size=st.sampled_from([1, 2, 5]))
def test_pipelined_reads_and_commits_equal_a_serial_run_sqlite(
    tmp_path_factory, program, seed, batch_size
):
    tmp = tmp_path_factory.mktemp("prop")
    asyncio.run(_run_property(tmp, sqlite_url(tmp), program, seed, batch_size))


@pytest.mark.postgres
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(program=programs, seed=st.integers(0, 10**6), batch_size=st.sampled_from([1, 2, 5]))
def test_pipelined_reads_and_commits_equal_a_serial_run_postgres(
    tmp_path_factory, program, seed, batch_size
):
    tmp = tmp_path_factory.mktemp("prop")

    async def go():
        url, schema = await pg_url()
        try:
            await _run_property(tmp, url, program, seed, batch_size)
        finally:
            await drop_pg(schema)

    asyncio.run(go())


@pytest.mark.postgres
async def test_database_going_away_mid_run_stops_with_earlier_batches_kept(tmp_path):
    project = write_project(tmp_path / "p", end_block=4)
    probe.reset({(b, 0): [("set", f"i{b}", "x", b)] for b in (1, 2, 3, 4)})
    logs, _ = one_event_per_block(probe.PROGRAM)
    url, schema = await pg_url()
    commits = []

    async def cut_the_connection(commit):
        commits.append(commit.description)
        if len(commits) == 3:
            # The server drops the writer's session, as a restart or a network cut would.
            admin = await asyncpg.connect(PG)
            pid = indexer.storage._writer.get_server_pid()
            await admin.execute("SELECT pg_terminate_backend($1)", pid)
            await admin.close()

    indexer = Indexer(
        project,
        url,
        batch_size=1,
        pipeline=False,
        before_commit=cut_the_connection,
        sources={1: ListSource(logs, 4)},
    )
    try:
        with pytest.raises(WriterError) as failure:
            await indexer.run()
        assert "chain 1 blocks 3-3" in str(failure.value)
        assert "nothing of it was stored" in str(failure.value)
        assert await table_rows(url, project) == [("i1", "x", 1), ("i2", "x", 2)]

        # The next start resumes from the committed progress and finishes the job.
        probe.reset({(b, 0): [("set", f"i{b}", "x", b)] for b in (1, 2, 3, 4)})
        await Indexer(project, url, sources={1: ListSource(logs, 4)}).run()
        assert await table_rows(url, project) == [(f"i{b}", "x", b) for b in (1, 2, 3, 4)]
    finally:
        await drop_pg(schema)


@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(program=programs, seed=st.integers(0, 10**6), batch_size=st.sampled_from([1, 2, 5]))
def test_preload_auto_reads_and_commits_equal_a_serial_run(
    tmp_path_factory, program, seed, batch_size
):
    # With preload: auto, batches skip the preload pass while memory answers every read.
    tmp = tmp_path_factory.mktemp("prop")
    asyncio.run(_run_property(tmp, sqlite_url(tmp), program, seed, batch_size, "auto"))


async def test_preload_auto_preloads_a_batch_only_when_a_read_misses_memory(tmp_path, monkeypatch):
    from evmflow.processor import Processor

    project = write_project(tmp_path / "p", end_block=1)
    probe.reset({(1, i): [("set", f"x{i}", "o", i)] for i in range(4)})
    logs, _ = one_event_per_block(probe.PROGRAM)
    url = sqlite_url(tmp_path)
    await Indexer(project, url, sources={1: ListSource(logs, 1)}).run()

    # One event a batch. x0 comes from the database (block 2), then from memory (3, 4, 5);
    # x1 (block 6) and x2 (block 7) are not in memory, x2 is again at block 8.
    reads = {2: "x0", 3: "x0", 4: "x0", 5: "x0", 6: "x1", 7: "x2", 8: "x2"}
    program = {(b, 0): [("get", x)] for b, x in reads.items()}
    probe.reset(program)
    logs, _ = one_event_per_block(program)
    preloaded = []
    original = Processor.preload

    async def preload(self, events, handlers):
        preloaded.append(events[0].block_number)
        await original(self, events, handlers)

    monkeypatch.setattr(Processor, "preload", preload)
    config = project / "evmflow.yaml"
    settings = json.loads(config.read_text())
    settings["chains"][0]["end_block"] = 8
    settings["engine"] = {"preload": "auto"}
    config.write_text(json.dumps(settings))
    await Indexer(project, url, batch_size=1, sources={1: ListSource(logs, 8)}).run()

    # A batch preloads only when one of its reads misses memory.
    assert preloaded == [2, 6, 7]
    assert [seen for *_, seen in probe.READS] == [(x, "o", int(x[1:])) for x in reads.values()]


async def test_default_preload_runs_every_batch_whole_even_when_memory_answers(
    tmp_path, monkeypatch
):
    from evmflow.processor import Processor

    project = write_project(tmp_path / "p", end_block=1)
    probe.reset({(1, 0): [("set", "x0", "o", 0)]})
    logs, _ = one_event_per_block(probe.PROGRAM)
    url = sqlite_url(tmp_path)
    await Indexer(project, url, sources={1: ListSource(logs, 1)}).run()

    # Blocks 2-5 each read x0: the database at block 2, memory after that.
    program = {(b, 0): [("get", "x0")] for b in range(2, 6)}
    probe.reset(program)
    logs, _ = one_event_per_block(program)
    preloaded = []
    original = Processor.preload

    async def preload(self, events, handlers):
        preloaded.append([e.block_number for e in events])
        await original(self, events, handlers)

    monkeypatch.setattr(Processor, "preload", preload)
    config = project / "evmflow.yaml"
    settings = json.loads(config.read_text())
    settings["chains"][0]["end_block"] = 5
    config.write_text(json.dumps(settings))
    await Indexer(project, url, batch_size=2, sources={1: ListSource(logs, 5)}).run()

    # engine.preload defaults to always: each batch of two events is preloaded whole.
    assert preloaded == [[2, 3], [4, 5]]
    assert [seen for *_, seen in probe.READS] == [("x0", "o", 0)] * 4
