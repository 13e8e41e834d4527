"""PostgreSQL storage, through asyncpg.

The writer and the reader each hold a connection. A commit stages each entity's rows with
COPY into a temporary table and upserts them from there in one statement; with array
parameters (``unnest``) as the alternative, selected by ``upsert_method``. bench/bench_engine.py
compares the two.

A ``schema`` query parameter in the URL (``postgresql://host/db?schema=name``) keeps the index
in a PostgreSQL schema of its own.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, NoReturn
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from ..errors import DatabaseUnavailable, IndexBusyError
from ..schema import SchemaSpec
from .base import (
    CHAINS_TABLE,
    CHECKPOINTS_TABLE,
    META_TABLE,
    OPERATORS,
    REGISTRATIONS_TABLE,
    ChainProgress,
    Checkpoint,
    Commit,
    IndexState,
    Registration,
    RollbackResult,
    Storage,
    history_table,
    holds_work,
    quote,
    tables_of_work,
)
from .convert import (
    POSTGRES_TYPES,
    column_type,
    numeric_text,
    postgres_from_db,
    postgres_to_db,
    row_converter,
)

log = logging.getLogger(__name__)

# How long lock() waits for the index lock held by another session, and how often it asks.
LOCK_WAIT = 30.0
LOCK_POLL = 0.2


def split_url(url: str) -> tuple[str, str | None]:
    """The URL for asyncpg and the schema named by its ``schema`` parameter."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query)
    schema = next((v for k, v in query if k == "schema"), None)
    rest = urlencode([(k, v) for k, v in query if k != "schema"])
    return urlunsplit(parts._replace(query=rest)), schema


def hide_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


class PostgresStorage(Storage):
    upsert_method = "copy"

    def __init__(self, url: str, schema: SchemaSpec) -> None:
        super().__init__(schema)
        self.dsn, self.pg_schema = split_url(url)
        self.url_for_humans = hide_password(url)
        self._reader: asyncpg.Connection | None = None
        self._writer: asyncpg.Connection | None = None
        self._to_db = {
            n: row_converter([postgres_to_db(f) for f in lay.fields])
            for n, lay in self.layouts.items()
        }
        # Rows bound for a staging table, whose NUMERIC columns are TEXT (see _create_staging):
        # from entity values, and from values read back from the database (rollbacks).
        self._to_stage = {
            n: row_converter([postgres_to_db(f) or numeric_text(f) for f in lay.fields])
            for n, lay in self.layouts.items()
        }
        self._db_to_stage = {
            n: row_converter([numeric_text(f) for f in lay.fields])
            for n, lay in self.layouts.items()
        }
        self._from_db = {
            n: row_converter([postgres_from_db(f) for f in lay.fields])
            for n, lay in self.layouts.items()
        }
        self._field_to_db = {
            (n, f.name): postgres_to_db(f) for n, lay in self.layouts.items() for f in lay.fields
        }
        self._sql_types = {
            n: [column_type(f, POSTGRES_TYPES, "JSONB") for f in lay.fields]
            for n, lay in self.layouts.items()
        }
        # Entity reads take NUMERIC columns as text (see numeric_text): int() of a decimal
        # string is cheaper than asyncpg's Decimal and int() of that.
        self._select = {
            n: ", ".join(
                f"{col}::TEXT" if t == "NUMERIC" else col
                for col, t in zip(lay.columns, self._sql_types[n], strict=True)
            )
            for n, lay in self.layouts.items()
        }

    async def _connect(self) -> asyncpg.Connection:
        settings = {"search_path": quote(self.pg_schema)} if self.pg_schema else {}
        # Names the session in pg_stat_activity (and in the lock's messages), unless the URL
        # names it otherwise.
        if "application_name" not in dict(parse_qsl(urlsplit(self.dsn).query)):
            settings["application_name"] = "evmflow"
        conn = await asyncpg.connect(self.dsn, server_settings=settings)
        return conn

    async def open(self) -> None:
        try:
            await self._open()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            await self.close()
            raise DatabaseUnavailable(
                f"cannot connect to PostgreSQL at {self.url_for_humans}: "
                f"{type(exc).__name__}: {exc}",
                hint="check that the server runs and the host, port, user and database name "
                "are right (createdb NAME makes a missing database)",
            ) from None

    async def lock(self) -> None:
        db = self._writer
        assert db is not None
        # A session lock, held by the writer's connection until it closes (or the process
        # dies), keyed by the schema the index lives in. A session outlives its client by a
        # while: the server ends it only once its statement in progress finishes and finds
        # the socket closed. So a restart right after a kill -9 waits for it (LOCK_WAIT)
        # instead of refusing at once.
        key = await db.fetchval("SELECT hashtext('evmflow:' || current_schema())")
        loop = asyncio.get_running_loop()
        started = loop.time()
        holder = ""
        while not await db.fetchval("SELECT pg_try_advisory_lock($1::BIGINT)", key):
            if not holder:
                _, holder = await self._lock_holder(key)
                log.warning(
                    "the index lock on %s is held by %s; waiting up to %g s for it to be released",
                    self.url_for_humans,
                    holder,
                    LOCK_WAIT,
                )
            if loop.time() - started >= LOCK_WAIT:
                await self._refuse_lock(key)
            await asyncio.sleep(LOCK_POLL)
        if holder:
            log.info("took the index lock after %.1f s", loop.time() - started)

    async def _lock_holder(self, key: int) -> tuple[int | None, str]:
        """Who holds the index lock: the server process id, and the process and what its
        session is doing in words."""
        assert self._writer is not None
        # A one-number advisory lock shows in pg_locks as its high and low 32 bits.
        row = await self._writer.fetchrow(
            "SELECT l.pid, a.application_name, host(a.client_addr) AS addr, a.client_port, "
            "a.state, EXTRACT(EPOCH FROM clock_timestamp() - a.query_start) AS query_seconds, "
            "EXTRACT(EPOCH FROM clock_timestamp() - a.state_change) AS state_seconds "
            "FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
            "AND l.classid = $1::BIGINT::OID AND l.objid = $2::BIGINT::OID "
            "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            (key >> 32) & 0xFFFFFFFF,
            key & 0xFFFFFFFF,
        )
        if row is None:
            return None, "a session that has just released it"
        parts = [f"server process pid {row['pid']}"]
        if row["application_name"]:
            parts.append(f"application {row['application_name']!r}")
        if row["addr"] is not None:
            port = f":{row['client_port']}" if row["client_port"] not in (None, -1) else ""
            parts.append(f"client {row['addr']}{port}")
        if row["state"] == "active" and row["query_seconds"] is not None:
            parts.append(f"running a statement for {float(row['query_seconds']):.1f} s")
        elif row["state"] and row["state_seconds"] is not None:
            parts.append(f"{row['state']} for {float(row['state_seconds']):.1f} s")
        return row["pid"], f"{parts[0]} ({', '.join(parts[1:])})" if len(parts) > 1 else parts[0]

    async def _refuse_lock(self, key: int) -> NoReturn:
        pid, holder = await self._lock_holder(key)
        end_it = f"SELECT pg_terminate_backend({pid})" if pid else "pg_terminate_backend(pid)"
        raise IndexBusyError(
            f"another evmflow process is indexing into {self.url_for_humans}: the index lock "
            f"is held by {holder} and was not released within {LOCK_WAIT:g} s",
            hint="wait for it to finish or stop it; one indexer per database (or ?schema=) at "
            "a time. If that process has just died, its database session has not ended yet "
            "(the server ends it once the statement it was running finishes): run again "
            f"later, or end the session with {end_it}",
        )

    async def _open(self) -> None:
        if self.pg_schema:
            conn = await asyncpg.connect(self.dsn)
            try:
                await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(self.pg_schema)}")
            finally:
                await conn.close()
        self._writer = await self._connect()
        self._reader = await self._connect()

    async def close(self) -> None:
        for conn in (self._writer, self._reader):
            if conn is not None and not conn.is_closed():
                await conn.close()
        self._writer = self._reader = None

    # -- setup -------------------------------------------------------------------------------

    async def prepare(
        self,
        config_fingerprint: str,
        chain_starts: dict[int, int],
        reset: bool = False,
        config_identity: str | None = None,
    ) -> IndexState:
        db = self._writer
        assert db is not None
        async with db.transaction():
            # One indexer per database (or schema) at a time.
            await db.execute("SELECT pg_advisory_xact_lock(hashtext(current_schema()))")
            await db.execute(
                f"CREATE TABLE IF NOT EXISTS {META_TABLE} (key TEXT PRIMARY KEY, value TEXT)"
            )
            meta = {r["key"]: r["value"] for r in await db.fetch(f"SELECT * FROM {META_TABLE}")}
            if reset:
                await self._drop_index(db, meta)
                meta = {}
            remade = self._mismatch(meta, config_fingerprint, config_identity)
            if remade is not None:
                if await self._holds_work(db, meta, chain_starts):
                    raise remade.error(self.url_for_humans)
                await self._drop_index(db, meta)
                meta = {}
            await self._create_tables(db)
            stored = {
                r["chain_id"]: ChainProgress(r["block"], r["events"])
                for r in await db.fetch(f"SELECT chain_id, block, events FROM {CHAINS_TABLE}")
            }
            added = {}
            for cid, start in chain_starts.items():
                if cid not in stored:
                    await db.execute(
                        f"INSERT INTO {CHAINS_TABLE} (chain_id, block, events) VALUES ($1, $2, 0)",
                        cid,
                        start - 1,
                    )
                    stored[cid] = ChainProgress(start - 1, 0)
                    added[cid] = start
            values = self._meta_values(meta, config_fingerprint, config_identity, added)
            await db.executemany(
                f"INSERT INTO {META_TABLE} (key, value) VALUES ($1, $2) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                list(values.items()),
            )
            checkpoints = [
                Checkpoint(r[0], r[1], r[2], r[3], r[4])
                for r in await db.fetch(
                    f"SELECT id, chain_id, block, hash, events_before FROM {CHECKPOINTS_TABLE} "
                    "ORDER BY id"
                )
            ]
            registrations = [
                Registration(r[0], r[1], r[2], r[3], r[4], r[5])
                for r in await db.fetch(
                    f"SELECT chain_id, contract, address, block, log_index, checkpoint "
                    f"FROM {REGISTRATIONS_TABLE} ORDER BY checkpoint"
                )
            ]
        if remade is not None:
            self._log_remade(remade)
        await self._create_staging(db)
        return IndexState(stored, int(values["last_checkpoint"]), checkpoints, registrations)

    async def _drop_index(self, db: asyncpg.Connection, meta: dict[str, str]) -> None:
        owned = json.loads(meta.get("tables", "[]"))
        for table in set(owned) | set(self.layouts):
            await db.execute(f"DROP TABLE IF EXISTS {quote(table)} CASCADE")
            await db.execute(f"DROP TABLE IF EXISTS {history_table(table)}")
        await db.execute(f"DROP TABLE IF EXISTS {CHAINS_TABLE}")
        await db.execute(f"DROP TABLE IF EXISTS {CHECKPOINTS_TABLE}")
        await db.execute(f"DROP TABLE IF EXISTS {REGISTRATIONS_TABLE}")
        await db.execute(f"DELETE FROM {META_TABLE}")

    async def _holds_work(
        self, db: asyncpg.Connection, meta: dict[str, str], chain_starts: dict[int, int]
    ) -> bool:
        tables = {
            r["tablename"]
            for r in await db.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
            )
        }
        holds_rows = False
        for table in tables_of_work(meta):
            if table in tables:
                holds_rows = holds_rows or await db.fetchval(
                    f"SELECT EXISTS (SELECT 1 FROM {quote(table)})"
                )
        progress = {}
        if CHAINS_TABLE in tables:
            rows = await db.fetch(f"SELECT chain_id, block, events FROM {CHAINS_TABLE}")
            progress = {r["chain_id"]: ChainProgress(r["block"], r["events"]) for r in rows}
        return holds_work(meta, chain_starts, progress, holds_rows)

    async def _create_tables(self, db: asyncpg.Connection) -> None:
        await db.execute(
            f"CREATE TABLE IF NOT EXISTS {CHAINS_TABLE} "
            "(chain_id BIGINT PRIMARY KEY, block BIGINT NOT NULL, events BIGINT NOT NULL)"
        )
        await db.execute(
            f"CREATE TABLE IF NOT EXISTS {CHECKPOINTS_TABLE} (id BIGINT PRIMARY KEY, "
            "chain_id BIGINT NOT NULL, block BIGINT NOT NULL, hash TEXT NOT NULL, "
            "events_before BIGINT NOT NULL)"
        )
        await db.execute(
            f"CREATE TABLE IF NOT EXISTS {REGISTRATIONS_TABLE} (chain_id BIGINT NOT NULL, "
            "contract TEXT NOT NULL, address TEXT NOT NULL, block BIGINT NOT NULL, "
            "log_index BIGINT NOT NULL, checkpoint BIGINT NOT NULL, "
            "PRIMARY KEY (chain_id, contract, address))"
        )
        for name, lay in self.layouts.items():
            history_cols = ", ".join(
                f"{c} {t}" for c, t in zip(lay.columns, self._sql_types[name], strict=True)
            )
            await db.execute(
                f"CREATE TABLE IF NOT EXISTS {history_table(name)} (checkpoint BIGINT NOT NULL, "
                f'deleted BOOLEAN NOT NULL, {history_cols}, PRIMARY KEY ("id", checkpoint))'
            )
            cols = []
            for f, col, sql_type in zip(
                lay.fields, lay.columns, self._sql_types[name], strict=True
            ):
                key = " PRIMARY KEY" if f.name == "id" else ""
                null = " NOT NULL" if f.required and f.name != "id" else ""
                cols.append(f"{col} {sql_type}{key}{null}")
            await db.execute(f"CREATE TABLE IF NOT EXISTS {lay.table} ({', '.join(cols)})")
            for f in lay.fields:
                if f.indexed or f.kind == "ref":
                    index = quote(f"{name}_{f.name}_idx")
                    await db.execute(
                        f"CREATE INDEX IF NOT EXISTS {index} ON {lay.table} ({quote(f.name)})"
                    )

    async def _create_staging(self, db: asyncpg.Connection) -> None:
        # NUMERIC columns are staged as TEXT and cast in the upsert: PostgreSQL parses decimal
        # text far faster than asyncpg encodes Python ints as binary NUMERIC.
        for name, lay in self.layouts.items():
            columns = ", ".join(
                f"{col} {'TEXT' if sql_type == 'NUMERIC' else sql_type}"
                for col, sql_type in zip(lay.columns, self._sql_types[name], strict=True)
            )
            await db.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS {quote('_stage_' + name)} ({columns}) "
                "ON COMMIT DELETE ROWS"
            )

    # -- reads -------------------------------------------------------------------------------

    async def _rows(self, entity: str, sql: str, *args: Any) -> list[tuple]:
        assert self._reader is not None
        rows = await self._reader.fetch(sql, *args)
        convert = self._from_db[entity]
        if convert:
            return [convert(tuple(r)) for r in rows]
        return [tuple(r) for r in rows]

    async def load_by_ids(self, entity: str, ids: list[str]) -> list[tuple]:
        lay = self.layouts[entity]
        sql = f'SELECT {self._select[entity]} FROM {lay.table} WHERE "id" = ANY($1::text[])'
        return await self._rows(entity, sql, ids)

    async def load_where(self, entity: str, field_name: str, op: str, value: Any) -> list[tuple]:
        lay = self.layouts[entity]
        i = lay.index_of(field_name)
        sql_type = self._sql_types[entity][i]
        convert = self._field_to_db[(entity, field_name)] or (lambda v: v)
        select = f"SELECT {self._select[entity]} FROM {lay.table} WHERE {quote(field_name)} "
        if op == "in":
            values = [convert(v) for v in value]
            return await self._rows(entity, select + f"= ANY($1::{sql_type}[])", values)
        if value is None:
            return await self._rows(entity, select + "IS NULL") if op == "eq" else []
        return await self._rows(entity, select + f"{OPERATORS[op]} $1::{sql_type}", convert(value))

    async def read_table(self, entity: str) -> list[tuple]:
        lay = self.layouts[entity]
        return await self._rows(
            entity, f'SELECT {self._select[entity]} FROM {lay.table} ORDER BY "id"'
        )

    async def read_progress(self) -> dict[int, ChainProgress]:
        assert self._reader is not None
        rows = await self._reader.fetch(f"SELECT chain_id, block, events FROM {CHAINS_TABLE}")
        return {r["chain_id"]: ChainProgress(r["block"], r["events"]) for r in rows}

    # -- the write path ----------------------------------------------------------------------

    async def commit(self, commit: Commit) -> None:
        db = self._writer
        assert db is not None
        async with db.transaction():
            if commit.in_window:
                await self._write_history(db, commit)
            if commit.registrations:
                await db.executemany(
                    f"INSERT INTO {REGISTRATIONS_TABLE} (chain_id, contract, address, block, "
                    "log_index, checkpoint) VALUES ($1, $2, $3, $4, $5, $6) "
                    "ON CONFLICT DO NOTHING",
                    [
                        (r.chain_id, r.contract, r.address, r.block, r.log_index, r.checkpoint)
                        for r in commit.registrations
                    ],
                )
            # Statements without parameters go to the server as one script: one round trip
            # for every entity's upsert from its staging table and the progress updates.
            script: list[str] = []
            for entity, rows in commit.changes.items():
                lay = self.layouts[entity]
                deletes = [i for i, r in rows.items() if r is None]
                upserts = [r for r in rows.values() if r is not None]
                if deletes:
                    await db.execute(
                        f'DELETE FROM {lay.table} WHERE "id" = ANY($1::text[])', deletes
                    )
                if upserts:
                    if self.upsert_method == "copy":
                        convert = self._to_stage[entity]
                        if convert:
                            upserts = [convert(r) for r in upserts]
                        script.append(await self._stage(db, entity, upserts))
                    else:
                        convert = self._to_db[entity]
                        if convert:
                            upserts = [convert(r) for r in upserts]
                        await self._upsert_unnest(db, entity, upserts)
            for cid, p in commit.chains.items():
                script.append(
                    f"UPDATE {CHAINS_TABLE} SET block = {int(p.block)}, events = {int(p.events)} "
                    f"WHERE chain_id = {int(cid)}"
                )
            script.append(
                f"UPDATE {META_TABLE} SET value = '{int(commit.last_checkpoint)}' "
                "WHERE key = 'last_checkpoint'"
            )
            await db.execute(";\n".join(script))

    def _conflict_clause(self, entity: str) -> str:
        columns = self.layouts[entity].columns
        updates = ", ".join(f"{c} = excluded.{c}" for c in columns[1:])
        return (
            f'ON CONFLICT ("id") DO UPDATE SET {updates}'
            if updates
            else 'ON CONFLICT ("id") DO NOTHING'
        )

    async def _stage(self, db: asyncpg.Connection, entity: str, rows: list[tuple]) -> str:
        """COPY staged rows (``_to_stage``) into the entity's staging table; returns the
        statement that upserts them."""
        stage = "_stage_" + entity
        await db.copy_records_to_table(stage, records=rows, schema_name="pg_temp")
        lay = self.layouts[entity]
        values = ", ".join(
            f"{col}::NUMERIC" if sql_type == "NUMERIC" else col
            for col, sql_type in zip(lay.columns, self._sql_types[entity], strict=True)
        )
        return (
            f"INSERT INTO {lay.table} ({', '.join(lay.columns)}) SELECT {values} "
            f"FROM pg_temp.{quote(stage)} {self._conflict_clause(entity)}"
        )

    async def _upsert_copy(self, db: asyncpg.Connection, entity: str, rows: list[tuple]) -> None:
        """Upsert rows as the database gave them (NUMERIC as Decimal)."""
        convert = self._db_to_stage[entity]
        if convert:
            rows = [convert(r) for r in rows]
        await db.execute(await self._stage(db, entity, rows))

    async def _upsert_unnest(self, db: asyncpg.Connection, entity: str, rows: list[tuple]) -> None:
        lay = self.layouts[entity]
        types = self._sql_types[entity]
        arrays = [list(column) for column in zip(*rows, strict=True)]
        params = ", ".join(f"${i + 1}::{t}[]" for i, t in enumerate(types))
        await db.execute(
            f"INSERT INTO {lay.table} ({', '.join(lay.columns)}) "
            f"SELECT * FROM unnest({params}) {self._conflict_clause(entity)}",
            *arrays,
        )

    # -- reorg window ------------------------------------------------------------------------

    async def _write_history(self, db: asyncpg.Connection, commit: Commit) -> None:
        for entity, versions in commit.history.items():
            lay = self.layouts[entity]
            table = history_table(entity)
            cols = ", ".join(lay.columns)
            ids = sorted({entity_id for entity_id, _ in versions})
            # The version from before the window, for ids the window has not seen yet.
            await db.execute(
                f"INSERT INTO {table} (checkpoint, deleted, {cols}) SELECT 0, false, {cols} "
                f'FROM {lay.table} t WHERE t."id" = ANY($1::text[]) AND NOT EXISTS '
                f'(SELECT 1 FROM {table} h WHERE h."id" = t."id")',
                ids,
            )
            convert = self._to_db[entity]
            blank = (None,) * (len(lay.columns) - 1)
            rows = []
            for (entity_id, checkpoint), row in versions.items():
                if row is None:
                    rows.append((checkpoint, True, entity_id, *blank))
                else:
                    rows.append((checkpoint, False, *(convert(row) if convert else row)))
            await db.copy_records_to_table(
                "_evmflow_history_" + entity,
                records=rows,
                columns=["checkpoint", "deleted", *(f.name for f in lay.fields)],
            )
        await db.executemany(
            f"INSERT INTO {CHECKPOINTS_TABLE} (id, chain_id, block, hash, events_before) "
            "VALUES ($1, $2, $3, $4, $5)",
            [
                (c.id, c.chain_id, c.block, c.block_hash, c.events_before)
                for c in commit.checkpoints
            ],
        )
        if commit.window_floor:
            await self._prune(db, commit.window_floor, commit.last_checkpoint)

    async def _prune(
        self, db: asyncpg.Connection, floor: dict[int, int], last_checkpoint: int
    ) -> None:
        """Forget what no reorg can reach any more (inside the writer's transaction)."""
        await db.executemany(
            f"DELETE FROM {CHECKPOINTS_TABLE} WHERE chain_id = $1 AND block < $2",
            list(floor.items()),
        )
        lowest = await db.fetchval(f"SELECT MIN(id) FROM {CHECKPOINTS_TABLE}")
        safe = lowest if lowest is not None else last_checkpoint + 1
        for entity in self.layouts:
            table = history_table(entity)
            await db.execute(
                f"DELETE FROM {table} d WHERE checkpoint < $1 AND checkpoint < "
                f'(SELECT MAX(h.checkpoint) FROM {table} h WHERE h."id" = d."id" '
                "AND h.checkpoint < $1)",
                safe,
            )
            await db.execute(
                f"DELETE FROM {table} d WHERE checkpoint < $1 AND NOT EXISTS "
                f'(SELECT 1 FROM {table} h WHERE h."id" = d."id" AND h.checkpoint >= $1)',
                safe,
            )

    async def rollback(
        self, target_checkpoint: int, chains: dict[int, ChainProgress]
    ) -> RollbackResult:
        db = self._writer
        assert db is not None
        result = RollbackResult()
        async with db.transaction():
            for entity, lay in self.layouts.items():
                table = history_table(entity)
                cols = ", ".join(lay.columns)
                versions = await db.fetch(
                    f'SELECT DISTINCT ON ("id") deleted, {cols} FROM {table} '
                    f'WHERE "id" IN (SELECT "id" FROM {table} WHERE checkpoint > $1) '
                    'AND checkpoint <= $1 ORDER BY "id", checkpoint DESC',
                    target_checkpoint,
                )
                changed = await db.fetch(
                    f'SELECT DISTINCT "id" FROM {table} WHERE checkpoint > $1', target_checkpoint
                )
                restore = [tuple(v)[1:] for v in versions if not v["deleted"]]
                keep = {r[0] for r in restore}
                remove = [r["id"] for r in changed if r["id"] not in keep]
                if remove:
                    await db.execute(
                        f'DELETE FROM {lay.table} WHERE "id" = ANY($1::text[])', remove
                    )
                if restore:
                    await self._upsert_copy(db, entity, restore)
                result.restored += len(restore)
                result.removed += len(remove)
                await db.execute(f"DELETE FROM {table} WHERE checkpoint > $1", target_checkpoint)
            await db.execute(f"DELETE FROM {CHECKPOINTS_TABLE} WHERE id > $1", target_checkpoint)
            await db.execute(
                f"DELETE FROM {REGISTRATIONS_TABLE} WHERE checkpoint > $1", target_checkpoint
            )
            await db.executemany(
                f"UPDATE {CHAINS_TABLE} SET block = $1, events = $2 WHERE chain_id = $3",
                [(p.block, p.events, cid) for cid, p in chains.items()],
            )
        return result

    async def count_history(self) -> int:
        assert self._reader is not None
        total = 0
        for entity in self.layouts:
            total += await self._reader.fetchval(f"SELECT COUNT(*) FROM {history_table(entity)}")
        return total
