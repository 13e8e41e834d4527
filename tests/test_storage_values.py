"""Every kind of field value goes into the database and comes back equal, on both backends:
through the commit path (staged rows) and every read (by ids, by condition, whole table), and
through a rollback's restore."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from evmflow.entities import make_entity_classes
from evmflow.schema import parse_schema
from evmflow.storage import ChainProgress, Commit, open_storage
from evmflow.storage.base import Checkpoint

SCHEMA = """
enum Kind { A B }
type Thing @entity {
  id: ID!
  big: BigInt!
  maybe_big: BigInt
  dec: BigDecimal!
  maybe_dec: BigDecimal
  small: Int!
  ratio: Float!
  flag: Boolean!
  raw: Bytes!
  at: Timestamp!
  doc: Json!
  kind: Kind!
  bigs: [BigInt!]!
  name: String
}
"""

HUGE = 2**255 - 19


def things() -> list[tuple]:
    spec = parse_schema(SCHEMA)
    thing = make_entity_classes(spec)["Thing"]
    values = [
        dict(big=HUGE, maybe_big=None, dec=Decimal("1.50"), maybe_dec=None, small=-(2**63)),
        dict(big=-HUGE, maybe_big=0, dec=Decimal("-0.000000000000000001"), maybe_dec=Decimal(7)),
        dict(
            big=10**30,
            maybe_big=-1,
            dec=Decimal("123456789012345678901234567890.5"),
            maybe_dec=Decimal("0"),
        ),
        dict(big=9, maybe_big=10, dec=Decimal(1), maybe_dec=Decimal("-2.25")),
    ]
    rows = []
    for i, v in enumerate(values):
        rows.append(
            thing(
                id=f"t{i}",
                ratio=0.1 * i,
                flag=i % 2 == 0,
                raw="0x" + bytes([i] * 20).hex(),
                at=datetime(2023, 7, 13, 12, i, tzinfo=UTC),
                doc={"n": i, "list": [1, "x", None], "big": str(HUGE)},
                kind="AB"[i % 2],
                bigs=[HUGE, -i, 0],
                name=None if i == 1 else f"name {i}",
                **{"small": v.pop("small", i)},
                **v,
            ).to_row()
        )
    return rows


@pytest.mark.parametrize("db", ["sqlite", "postgres"], indirect=True)
async def test_every_value_kind_survives_commit_reads_and_rollback(db):
    spec = parse_schema(SCHEMA)
    storage = open_storage(db("values"), spec)
    await storage.open()
    try:
        await storage.prepare("test", {1: 0})
        rows = things()
        await storage.commit(
            Commit(
                changes={"Thing": {r[0]: r for r in rows}},
                chains={1: ChainProgress(5, len(rows))},
                last_checkpoint=1,
                history={"Thing": {(r[0], 1): r for r in rows}},
                checkpoints=[Checkpoint(1, 1, 5, "0x05", 0)],
            )
        )
        # A later block changes every row (values shifted by one row) and deletes t3; the
        # rollback to checkpoint 1 restores the rows read back from history.
        later = {r[0]: (r[0], *n[1:]) for r, n in zip(rows, rows[1:] + rows[:1], strict=True)}
        later["t3"] = None
        await storage.commit(
            Commit(
                changes={"Thing": later},
                chains={1: ChainProgress(6, 2 * len(rows))},
                last_checkpoint=2,
                history={"Thing": {(i, 2): r for i, r in later.items()}},
                checkpoints=[Checkpoint(2, 1, 6, "0x06", len(rows))],
            )
        )
        assert sorted(await storage.read_table("Thing")) == sorted(
            r for r in later.values() if r is not None
        )
        await storage.rollback(1, {1: ChainProgress(5, len(rows))})
        by_id = {r[0]: r for r in rows}
        assert sorted(await storage.read_table("Thing")) == sorted(rows)
        loaded = await storage.load_by_ids("Thing", ["t3", "t0", "missing"])
        assert sorted(loaded) == [by_id["t0"], by_id["t3"]]
        # BigInt order is numeric, not textual: 9 < 10**30 < HUGE.
        bigger = await storage.load_where("Thing", "big", "gt", 9)
        assert sorted(r[0] for r in bigger) == ["t0", "t2"]
        assert [r[0] for r in await storage.load_where("Thing", "dec", "lt", Decimal(0))] == ["t1"]
        in_list = await storage.load_where("Thing", "maybe_big", "in", [0, -1])
        assert sorted(r[0] for r in in_list) == ["t1", "t2"]
        assert [r[0] for r in await storage.load_where("Thing", "maybe_dec", "eq", None)] == ["t0"]
    finally:
        await storage.close()
