"""SQLite storage: the embedded default.

The writer's connection lives in a thread of its own, so SQLite's work on commit N (which
releases the GIL) runs while the event loop decodes and handles batch N+1. Reads come from a
second connection on the loop's thread. WAL mode lets that reader see the last committed state
while a commit is under way.

BigInt and BigDecimal are stored as decimal text, lossless, with collations that compare them
as numbers; a tool that opens the file without evmflow's collations can read them but not sort
or compare them.
"""

from __future__ import annotations

import asyncio
import fcntl
import itertools
import json
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

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
from .convert import SQLITE_TYPES, column_type, row_converter, sqlite_from_db, sqlite_to_db

_CHUNK = 500

# Rows per multi-row INSERT in a commit, and the most parameters one statement may take (the
# SQLite limit is 32,766 since 3.32 and 999 before).
_ROWS_PER_STATEMENT = 500
_MAX_PARAMETERS = 32766 if sqlite3.sqlite_version_info >= (3, 32) else 999


def _compare_ints(a: str, b: str) -> int:
    x, y = int(a), int(b)
    return (x > y) - (x < y)


def _compare_decimals(a: str, b: str) -> int:
    x, y = Decimal(a), Decimal(b)
    return (x > y) - (x < y)


def connect(path: str) -> sqlite3.Connection:
    """A connection with evmflow's collations, as every reader of an index needs."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.create_collation("evmflow_bigint", _compare_ints)
    conn.create_collation("evmflow_decimal", _compare_decimals)
    conn.execute("PRAGMA journal_mode=WAL")
    # NORMAL keeps every commit through a process crash (SIGKILL); only a power loss can drop
    # the last commits, never corrupt the file.
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


class SqliteStorage(Storage):
    def __init__(self, path: str, schema: SchemaSpec) -> None:
        super().__init__(schema)
        self.path = path
        self.url_for_humans = f"sqlite:///{path}"
        self._reader: sqlite3.Connection | None = None
        self._writer: sqlite3.Connection | None = None
        self._lock_file: Any = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="evmflow-sqlite")
        self._to_db = {
            n: row_converter([sqlite_to_db(f) for f in lay.fields])
            for n, lay in self.layouts.items()
        }
        self._from_db = {
            n: row_converter([sqlite_from_db(f) for f in lay.fields])
            for n, lay in self.layouts.items()
        }
        self._field_to_db = {
            (n, f.name): sqlite_to_db(f) for n, lay in self.layouts.items() for f in lay.fields
        }
        self._upsert_sql: dict[str, str] = {}
        self._delete_sql: dict[str, str] = {}
        # (one-row statement, rows) -> the statement for that many rows; see _insert.
        self._multi_row_sql: dict[tuple[str, int], str] = {}
        for name, lay in self.layouts.items():
            cols = ", ".join(lay.columns)
            marks = ", ".join("?" for _ in lay.columns)
            updates = ", ".join(f"{c} = excluded.{c}" for c in lay.columns[1:])
            conflict = f"DO UPDATE SET {updates}" if updates else "DO NOTHING"
            self._upsert_sql[name] = (
                f'INSERT INTO {lay.table} ({cols}) VALUES ({marks}) ON CONFLICT("id") {conflict}'
            )
            self._delete_sql[name] = f'DELETE FROM {lay.table} WHERE "id" = ?'

    async def _in_thread(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    async def open(self) -> None:
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._writer = await self._in_thread(connect, self.path)
            self._reader = connect(self.path)
        except (OSError, sqlite3.Error) as exc:
            raise DatabaseUnavailable(
                f"cannot open the SQLite database {self.path}: {exc}",
                hint="check the path and its permissions (sqlite:///relative/to/project.db or "
                "sqlite:////absolute/path.db)",
            ) from None

    async def lock(self) -> None:
        if self.path == ":memory:":
            return
        self._lock_file = open(self.path + ".lock", "a+")  # noqa: SIM115 - held until close
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            self._lock_file = None
            raise IndexBusyError(
                f"another evmflow process is indexing into {self.path}",
                hint="wait for it to finish or stop it; one indexer per database at a time",
            ) from None

    async def close(self) -> None:
        if self._writer is not None:
            await self._in_thread(self._writer.close)
            self._writer = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        self._thread.shutdown(wait=True)
        if self._lock_file is not None:
            self._lock_file.close()  # releases the lock
            self._lock_file = None

    # -- setup -------------------------------------------------------------------------------

    async def prepare(
        self,
        config_fingerprint: str,
        chain_starts: dict[int, int],
        reset: bool = False,
        config_identity: str | None = None,
    ) -> IndexState:
        return await self._in_thread(
            self._prepare, config_fingerprint, chain_starts, reset, config_identity
        )

    def _prepare(
        self,
        config_fingerprint: str,
        chain_starts: dict[int, int],
        reset: bool,
        config_identity: str | None,
    ) -> IndexState:
        db = self._writer
        assert db is not None
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(
                f"CREATE TABLE IF NOT EXISTS {META_TABLE} (key TEXT PRIMARY KEY, value TEXT)"
            )
            meta = dict(db.execute(f"SELECT key, value FROM {META_TABLE}").fetchall())
            if reset:
                self._drop_index(db, meta)
                meta = {}
            remade = self._mismatch(meta, config_fingerprint, config_identity)
            if remade is not None:
                if self._holds_work(db, meta, chain_starts):
                    raise remade.error(self.url_for_humans)
                self._drop_index(db, meta)
                meta = {}
            self._create_tables(db)
            stored_chains = {
                cid: ChainProgress(block, events)
                for cid, block, events in db.execute(
                    f"SELECT chain_id, block, events FROM {CHAINS_TABLE}"
                )
            }
            added = {}
            for cid, start in chain_starts.items():
                if cid not in stored_chains:
                    db.execute(
                        f"INSERT INTO {CHAINS_TABLE} (chain_id, block, events) VALUES (?, ?, 0)",
                        (cid, start - 1),
                    )
                    stored_chains[cid] = ChainProgress(start - 1, 0)
                    added[cid] = start
            values = self._meta_values(meta, config_fingerprint, config_identity, added)
            db.executemany(
                f"INSERT INTO {META_TABLE} (key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                list(values.items()),
            )
            checkpoints = [
                Checkpoint(*row)
                for row in db.execute(
                    f"SELECT id, chain_id, block, hash, events_before FROM {CHECKPOINTS_TABLE} "
                    "ORDER BY id"
                )
            ]
            registrations = [
                Registration(*row)
                for row in db.execute(
                    f"SELECT chain_id, contract, address, block, log_index, checkpoint "
                    f"FROM {REGISTRATIONS_TABLE} ORDER BY checkpoint"
                )
            ]
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        if remade is not None:
            self._log_remade(remade)
        return IndexState(stored_chains, int(values["last_checkpoint"]), checkpoints, registrations)

    def _drop_index(self, db: sqlite3.Connection, meta: dict[str, str]) -> None:
        owned = json.loads(meta.get("tables", "[]"))
        for table in set(owned) | set(self.layouts):
            db.execute(f"DROP TABLE IF EXISTS {quote(table)}")
            db.execute(f"DROP TABLE IF EXISTS {history_table(table)}")
        db.execute(f"DROP TABLE IF EXISTS {CHAINS_TABLE}")
        db.execute(f"DROP TABLE IF EXISTS {CHECKPOINTS_TABLE}")
        db.execute(f"DROP TABLE IF EXISTS {REGISTRATIONS_TABLE}")
        db.execute(f"DELETE FROM {META_TABLE}")

    def _holds_work(
        self, db: sqlite3.Connection, meta: dict[str, str], chain_starts: dict[int, int]
    ) -> bool:
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
        holds_rows = any(
            db.execute(f"SELECT EXISTS (SELECT 1 FROM {quote(table)})").fetchone()[0]
            for table in tables_of_work(meta)
            if table in tables
        )
        progress = {}
        if CHAINS_TABLE in tables:
            rows = db.execute(f"SELECT chain_id, block, events FROM {CHAINS_TABLE}")
            progress = {cid: ChainProgress(block, events) for cid, block, events in rows}
        return holds_work(meta, chain_starts, progress, holds_rows)

    def _create_tables(self, db: sqlite3.Connection) -> None:
        db.execute(
            f"CREATE TABLE IF NOT EXISTS {CHAINS_TABLE} "
            "(chain_id INTEGER PRIMARY KEY, block INTEGER NOT NULL, events INTEGER NOT NULL)"
        )
        db.execute(
            f"CREATE TABLE IF NOT EXISTS {CHECKPOINTS_TABLE} (id INTEGER PRIMARY KEY, "
            "chain_id INTEGER NOT NULL, block INTEGER NOT NULL, hash TEXT NOT NULL, "
            "events_before INTEGER NOT NULL)"
        )
        db.execute(
            f"CREATE TABLE IF NOT EXISTS {REGISTRATIONS_TABLE} (chain_id INTEGER NOT NULL, "
            "contract TEXT NOT NULL, address TEXT NOT NULL, block INTEGER NOT NULL, "
            "log_index INTEGER NOT NULL, checkpoint INTEGER NOT NULL, "
            "PRIMARY KEY (chain_id, contract, address))"
        )
        for name, lay in self.layouts.items():
            types = [column_type(f, SQLITE_TYPES, "TEXT") for f in lay.fields]
            history_cols = ", ".join(f"{c} {t}" for c, t in zip(lay.columns, types, strict=True))
            db.execute(
                f"CREATE TABLE IF NOT EXISTS {history_table(name)} (checkpoint INTEGER NOT NULL, "
                f'deleted INTEGER NOT NULL, {history_cols}, PRIMARY KEY ("id", checkpoint))'
            )
            cols = []
            for f, col in zip(lay.fields, lay.columns, strict=True):
                sql_type = column_type(f, SQLITE_TYPES, "TEXT")
                key = " PRIMARY KEY" if f.name == "id" else ""
                null = " NOT NULL" if f.required and f.name != "id" else ""
                cols.append(f"{col} {sql_type}{key}{null}")
            db.execute(f"CREATE TABLE IF NOT EXISTS {lay.table} ({', '.join(cols)})")
            for f in lay.fields:
                if f.indexed or f.kind == "ref":
                    index = quote(f"{name}_{f.name}_idx")
                    db.execute(
                        f"CREATE INDEX IF NOT EXISTS {index} ON {lay.table} ({quote(f.name)})"
                    )

    # -- reads -------------------------------------------------------------------------------

    def _rows(self, entity: str, sql: str, params: list) -> list[tuple]:
        assert self._reader is not None
        rows = self._reader.execute(sql, params).fetchall()
        convert = self._from_db[entity]
        return [convert(r) for r in rows] if convert else rows

    async def load_by_ids(self, entity: str, ids: list[str]) -> list[tuple]:
        lay = self.layouts[entity]
        out: list[tuple] = []
        select = f'SELECT {", ".join(lay.columns)} FROM {lay.table} WHERE "id" IN '
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            out += self._rows(entity, select + f"({', '.join('?' * len(chunk))})", chunk)
        return out

    async def load_where(self, entity: str, field_name: str, op: str, value: Any) -> list[tuple]:
        lay = self.layouts[entity]
        convert = self._field_to_db[(entity, field_name)] or (lambda v: v)
        select = f"SELECT {', '.join(lay.columns)} FROM {lay.table} WHERE {quote(field_name)} "
        if op == "in":
            values = [convert(v) for v in value]
            out: list[tuple] = []
            for start in range(0, len(values), _CHUNK):
                chunk = values[start : start + _CHUNK]
                out += self._rows(entity, select + f"IN ({', '.join('?' * len(chunk))})", chunk)
            return out
        if value is None:
            return self._rows(entity, select + "IS NULL", []) if op == "eq" else []
        return self._rows(entity, select + f"{OPERATORS[op]} ?", [convert(value)])

    async def read_table(self, entity: str) -> list[tuple]:
        lay = self.layouts[entity]
        return self._rows(
            entity, f'SELECT {", ".join(lay.columns)} FROM {lay.table} ORDER BY "id"', []
        )

    async def read_progress(self) -> dict[int, ChainProgress]:
        assert self._reader is not None
        rows = self._reader.execute(f"SELECT chain_id, block, events FROM {CHAINS_TABLE}")
        return {cid: ChainProgress(block, events) for cid, block, events in rows}

    # -- the write path ----------------------------------------------------------------------

    async def commit(self, commit: Commit) -> None:
        await self._in_thread(self._commit, commit)

    def _commit(self, commit: Commit) -> None:
        db = self._writer
        assert db is not None
        db.execute("BEGIN IMMEDIATE")
        try:
            if commit.in_window:
                self._write_history(db, commit)
            if commit.registrations:
                db.executemany(
                    f"INSERT INTO {REGISTRATIONS_TABLE} (chain_id, contract, address, block, "
                    "log_index, checkpoint) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    [
                        (r.chain_id, r.contract, r.address, r.block, r.log_index, r.checkpoint)
                        for r in commit.registrations
                    ],
                )
            for entity, rows in commit.changes.items():
                upserts = [r for r in rows.values() if r is not None]
                deletes = [(i,) for i, r in rows.items() if r is None]
                if deletes:
                    self._delete(db, entity, [i for (i,) in deletes])
                if upserts:
                    convert = self._to_db[entity]
                    if convert:
                        upserts = [convert(r) for r in upserts]
                    self._upsert(db, entity, upserts)
            db.executemany(
                f"UPDATE {CHAINS_TABLE} SET block = ?, events = ? WHERE chain_id = ?",
                [(p.block, p.events, cid) for cid, p in commit.chains.items()],
            )
            db.execute(
                f"UPDATE {META_TABLE} SET value = ? WHERE key = 'last_checkpoint'",
                (str(commit.last_checkpoint),),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _upsert(self, db: sqlite3.Connection, entity: str, rows: list[tuple]) -> None:
        self._insert(db, self._upsert_sql[entity], len(self.layouts[entity].columns), rows)

    def _insert(self, db: sqlite3.Connection, sql: str, width: int, rows: list[tuple]) -> None:
        """Run a one-row ``INSERT ... VALUES (?, ...) ...`` for every row, hundreds of rows to
        a statement. The sqlite3 module releases the interpreter lock while SQLite runs a
        statement and must take it back after: with one statement per row
        (``executemany``), a busy event loop thread makes this thread wait for the lock
        after every row, and commits that should overlap the handlers crawl instead."""
        one = "VALUES (" + ", ".join("?" * width) + ")"
        per = max(1, min(_ROWS_PER_STATEMENT, _MAX_PARAMETERS // width))
        for start in range(0, len(rows), per):
            chunk = rows[start : start + per]
            key = (sql, len(chunk))
            many = self._multi_row_sql.get(key)
            if many is None:
                values = "VALUES " + ", ".join([one.removeprefix("VALUES ")] * len(chunk))
                many = self._multi_row_sql[key] = sql.replace(one, values, 1)
            db.execute(many, list(itertools.chain.from_iterable(chunk)))

    def _delete(self, db: sqlite3.Connection, entity: str, ids: list[str]) -> None:
        table = self.layouts[entity].table
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            db.execute(f'DELETE FROM {table} WHERE "id" IN ({", ".join("?" * len(chunk))})', chunk)

    # -- reorg window ------------------------------------------------------------------------

    def _write_history(self, db: sqlite3.Connection, commit: Commit) -> None:
        for entity, versions in commit.history.items():
            lay = self.layouts[entity]
            table = history_table(entity)
            cols = ", ".join(lay.columns)
            ids = {entity_id for entity_id, _ in versions}
            # The version from before the window, for ids the window has not seen yet.
            db.executemany(
                f"INSERT INTO {table} (checkpoint, deleted, {cols}) SELECT 0, 0, {cols} "
                f'FROM {lay.table} WHERE "id" = ? AND NOT EXISTS '
                f'(SELECT 1 FROM {table} WHERE "id" = ?)',
                [(i, i) for i in ids],
            )
            convert = self._to_db[entity]
            blank = (None,) * (len(lay.columns) - 1)
            rows = []
            for (entity_id, checkpoint), row in versions.items():
                if row is None:
                    rows.append((checkpoint, 1, entity_id, *blank))
                else:
                    rows.append((checkpoint, 0, *(convert(row) if convert else row)))
            marks = ", ".join("?" * (len(lay.columns) + 2))
            self._insert(
                db,
                f"INSERT INTO {table} (checkpoint, deleted, {cols}) VALUES ({marks})",
                len(lay.columns) + 2,
                rows,
            )
        db.executemany(
            f"INSERT INTO {CHECKPOINTS_TABLE} (id, chain_id, block, hash, events_before) "
            "VALUES (?, ?, ?, ?, ?)",
            [
                (c.id, c.chain_id, c.block, c.block_hash, c.events_before)
                for c in commit.checkpoints
            ],
        )
        if commit.window_floor:
            self._prune(db, commit.window_floor, commit.last_checkpoint)

    def _prune(self, db: sqlite3.Connection, floor: dict[int, int], last_checkpoint: int) -> None:
        """Forget what no reorg can reach any more. Runs inside the writer's transaction, so
        never beside another write to the same tables."""
        db.executemany(
            f"DELETE FROM {CHECKPOINTS_TABLE} WHERE chain_id = ? AND block < ?",
            list(floor.items()),
        )
        (lowest,) = db.execute(f"SELECT MIN(id) FROM {CHECKPOINTS_TABLE}").fetchone()
        safe = lowest if lowest is not None else last_checkpoint + 1
        for entity in self.layouts:
            table = history_table(entity)
            # Keep, per id, the newest version below the safe point (it is the baseline a
            # rollback restores), unless nothing newer exists: then the entity table holds it.
            db.execute(
                f"DELETE FROM {table} WHERE checkpoint < ? AND checkpoint < "
                f'(SELECT MAX(h.checkpoint) FROM {table} h WHERE h."id" = {table}."id" '
                "AND h.checkpoint < ?)",
                (safe, safe),
            )
            db.execute(
                f"DELETE FROM {table} WHERE checkpoint < ? AND NOT EXISTS "
                f'(SELECT 1 FROM {table} h WHERE h."id" = {table}."id" AND h.checkpoint >= ?)',
                (safe, safe),
            )

    async def rollback(
        self, target_checkpoint: int, chains: dict[int, ChainProgress]
    ) -> RollbackResult:
        return await self._in_thread(self._rollback, target_checkpoint, chains)

    def _rollback(self, target: int, chains: dict[int, ChainProgress]) -> RollbackResult:
        db = self._writer
        assert db is not None
        result = RollbackResult()
        db.execute("BEGIN IMMEDIATE")
        try:
            for entity, lay in self.layouts.items():
                table = history_table(entity)
                cols = ", ".join(lay.columns)
                ids = [
                    r[0]
                    for r in db.execute(
                        f'SELECT DISTINCT "id" FROM {table} WHERE checkpoint > ?', (target,)
                    )
                ]
                for entity_id in ids:
                    version = db.execute(
                        f'SELECT deleted, {cols} FROM {table} WHERE "id" = ? AND checkpoint <= ? '
                        "ORDER BY checkpoint DESC LIMIT 1",
                        (entity_id, target),
                    ).fetchone()
                    if version is None or version[0]:
                        db.execute(self._delete_sql[entity], (entity_id,))
                        result.removed += 1
                    else:
                        db.execute(self._upsert_sql[entity], version[1:])
                        result.restored += 1
                db.execute(f"DELETE FROM {table} WHERE checkpoint > ?", (target,))
            db.execute(f"DELETE FROM {CHECKPOINTS_TABLE} WHERE id > ?", (target,))
            db.execute(f"DELETE FROM {REGISTRATIONS_TABLE} WHERE checkpoint > ?", (target,))
            db.executemany(
                f"UPDATE {CHAINS_TABLE} SET block = ?, events = ? WHERE chain_id = ?",
                [(p.block, p.events, cid) for cid, p in chains.items()],
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return result

    async def count_history(self) -> int:
        assert self._reader is not None
        total = 0
        for entity in self.layouts:
            (n,) = self._reader.execute(f"SELECT COUNT(*) FROM {history_table(entity)}").fetchone()
            total += n
        return total
