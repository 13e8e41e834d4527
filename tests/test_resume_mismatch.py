"""A database made for another schema or config: the refusal says what changed, and a
database that holds nothing indexed yet is made again instead of refused."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pytest

from evmflow.config import load_config
from evmflow.engine import Indexer
from evmflow.errors import DatabaseMismatchError, HandlerFailed
from evmflow.schema import parse_schema
from evmflow.storage import ChainProgress, Commit, IndexState, open_storage
from tests.support.scripted import SCHEMA, ListSource, transfer_log, write_project
from tests.test_locking import ROWS, three_blocks
from tests.test_pipeline import table_rows

RESET_HINT = (
    "start over with 'evmflow run --reset' (drops the indexed data), or point --db at "
    "another database"
)

# SCHEMA with Item's score gone, a nickname added, and a new entity.
CHANGED_SCHEMA = """
type Item @entity {
  id: ID!
  owner: String! @index
  nickname: String
}

type Tag @entity {
  id: ID!
}
"""


async def _committed_storage(url: str, schema: str, config_identity: str | None = None):
    """A database of ``schema`` whose chain 1 (start block 1) committed block 3, 1 event."""
    storage = open_storage(url, parse_schema(schema))
    await storage.open()
    fingerprint = _sha256(config_identity or "config")
    await storage.prepare(fingerprint, {1: 1}, config_identity=config_identity)
    await storage.commit(Commit(chains={1: ChainProgress(3, 1)}))
    await storage.close()


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


async def _prepare_fails(
    url: str, schema: str, config_identity: str | None = None, start: int = 1
) -> str:
    storage = open_storage(url, parse_schema(schema))
    await storage.open()
    try:
        fingerprint = _sha256(config_identity or "config")
        with pytest.raises(DatabaseMismatchError) as refused:
            await storage.prepare(fingerprint, {1: start}, config_identity=config_identity)
        return refused.value.message
    finally:
        await storage.close()


async def _prepare(url: str, fingerprint: str, chain_starts: dict[int, int]) -> IndexState:
    """prepare() a database of SCHEMA and close it again."""
    storage = open_storage(url, parse_schema(SCHEMA))
    await storage.open()
    try:
        return await storage.prepare(fingerprint, chain_starts)
    finally:
        await storage.close()


async def _delete_meta(url: str, key: str) -> None:
    """Remove a meta key, as a database written before evmflow stored it lacks it."""
    storage = open_storage(url, parse_schema(SCHEMA))
    await storage.open()
    try:
        writer = storage._writer  # type: ignore[attr-defined]
        delete = f"DELETE FROM _evmflow_meta WHERE key = '{key}'"
        if url.startswith("sqlite"):
            await storage._in_thread(writer.execute, delete)  # type: ignore[attr-defined]
        else:
            await writer.execute(delete)
    finally:
        await storage.close()


def _many_entities(count: int) -> str:
    return "".join(f"type E{i} @entity {{\n  id: ID!\n}}\n" for i in range(count))


def _identity_of(schema: str) -> str:
    """The text a schema's fingerprint hashes, written out for the two schemas used here."""
    item = [["id", "scalar", "ID", True, False], ["owner", "scalar", "String", True, False]]
    if "score" in schema:
        shape = {"Item": [*item, ["score", "scalar", "Int", True, False]]}
    else:
        tag = [["id", "scalar", "ID", True, False]]
        shape = {"Item": [*item, ["nickname", "scalar", "String", False, False]], "Tag": tag}
    return json.dumps([shape, {}], sort_keys=True)


async def test_a_changed_schema_after_committed_work_names_the_fields(tmp_path, db_url):
    project, logs = three_blocks(tmp_path)
    await Indexer(project, db_url, sources={1: ListSource(logs, 3)}).run()
    write_project(project, schema=CHANGED_SCHEMA, end_block=3)

    with pytest.raises(DatabaseMismatchError) as refused:
        await Indexer(project, db_url, sources={1: ListSource(logs, 3)}).run()

    assert refused.value.message == (
        f"the database at {db_url} holds an index made for another schema (changed since: "
        "entity Item: field score (Int!) removed; entity Item: field nickname (String) added; "
        "entity Tag added)"
    )
    assert refused.value.hint == RESET_HINT
    write_project(project, end_block=3)
    assert await table_rows(db_url, project) == ROWS


async def test_more_than_five_changes_are_named_five_and_counted(db):
    url = db()
    await _committed_storage(url, _many_entities(2))

    message = await _prepare_fails(url, _many_entities(9))

    assert message == (
        f"the database at {url} holds an index made for another schema (changed since: "
        "entity E2 added; entity E3 added; entity E4 added; entity E5 added; entity E6 added; "
        "and 2 more)"
    )


async def test_progress_over_blocks_without_events_is_committed_work(db):
    url = db()
    storage = open_storage(url, parse_schema(SCHEMA))
    await storage.open()
    await storage.prepare(_sha256("config"), {1: 1})
    await storage.commit(Commit(chains={1: ChainProgress(2, 0)}))
    await storage.close()

    message = await _prepare_fails(url, CHANGED_SCHEMA)

    assert message == (
        f"the database at {url} holds an index made for another schema (changed since: "
        "entity Item: field score (Int!) removed; entity Item: field nickname (String) added; "
        "entity Tag added)"
    )


async def test_a_database_without_stored_identities_names_the_fingerprints(db):
    # As written before meta held the schema's identity: only the fingerprints can be told.
    url = db()
    await _committed_storage(url, SCHEMA)
    await _delete_meta(url, "schema_identity")
    old = _sha256(_identity_of(SCHEMA))[:16]
    new = _sha256(_identity_of(CHANGED_SCHEMA))[:16]

    message = await _prepare_fails(url, CHANGED_SCHEMA)

    assert message == (
        f"the database at {url} holds an index made for another schema "
        f"(stored {old}, this project {new})"
    )


# --- the config -------------------------------------------------------------------------------

ADDRESS_A = "0x" + "aa" * 20
ADDRESS_B = "0x" + "bb" * 20
TRANSFER = "Transfer(address indexed,address indexed,uint256)"
APPROVAL = "Approval(address indexed,address indexed,uint256)"


def _config_identity(addresses: list[str], events: list[str]) -> str:
    """The text the fingerprint of write_project's config hashes, with these addresses and
    events for its contract ERC20."""
    described = {
        "version": 1,
        "chains": [[1, 1]],
        "contracts": [
            {
                "name": "ERC20",
                "addresses": sorted(addresses),
                "events": sorted(events),
                "chains": [1],
                "start_block": None,
                "registered": False,
                "options": [],
            }
        ],
        "blocks": [],
    }
    return json.dumps(described, sort_keys=True, separators=(",", ":"))


def _set_contract(project: Path, addresses: list[str], events: list[str]) -> None:
    config_file = project / "evmflow.yaml"
    config = json.loads(config_file.read_text())
    config["contracts"][0]["address"] = addresses
    config["contracts"][0]["events"] = [e.split("(")[0] for e in events]
    config_file.write_text(json.dumps(config))


async def test_changed_contract_addresses_and_events_are_named(tmp_path, db):
    url = db()
    project = write_project(tmp_path / "p")
    before = _config_identity([ADDRESS_A], [TRANSFER])
    after = _config_identity([ADDRESS_B], [TRANSFER, APPROVAL])
    # The texts are the ones the project's config fingerprints hash.
    _set_contract(project, [ADDRESS_A], [TRANSFER])
    assert _sha256(before) == load_config(project).fingerprint()
    _set_contract(project, [ADDRESS_B], [TRANSFER, APPROVAL])
    assert _sha256(after) == load_config(project).fingerprint()
    await _committed_storage(url, SCHEMA, before)

    message = await _prepare_fails(url, SCHEMA, after)

    assert message == (
        f"the database at {url} holds an index made for another set of chains and contracts "
        f"(changed since: contract ERC20: address {ADDRESS_A} removed; contract ERC20: address "
        f"{ADDRESS_B} added; contract ERC20: event {APPROVAL} added)"
    )


# --- nothing committed yet ----------------------------------------------------------------------

FAILING_HANDLERS = """
from evmflow.contracts import ERC20


@ERC20.Transfer.handler
async def on_transfer(event, context):
    raise RuntimeError("not written yet")
"""

NICKNAME_SCHEMA = """
type Item @entity {
  id: ID!
  owner: String! @index
  score: Int!
  nickname: String
}
"""

NICKNAME_HANDLERS = """
from evmflow.contracts import ERC20
from evmflow.entities import Item


@ERC20.Transfer.handler
async def on_transfer(event, context):
    block = event.block_number
    context.Item.set(Item(id=f"i{block}", owner="o", score=block, nickname=f"n{block}"))
"""


async def test_a_schema_change_after_a_first_batch_that_failed_needs_no_reset(
    tmp_path, db_url, caplog
):
    caplog.set_level(logging.INFO, logger="evmflow.storage")
    logs = [transfer_log(b, 0) for b in (1, 2, 3)]
    project = write_project(tmp_path / "p", handlers=FAILING_HANDLERS, end_block=3)
    with pytest.raises(HandlerFailed):
        await Indexer(project, db_url, sources={1: ListSource(logs, 3)}).run()
    write_project(project, schema=NICKNAME_SCHEMA, handlers=NICKNAME_HANDLERS, end_block=3)

    await Indexer(project, db_url, sources={1: ListSource(logs, 3)}).run()

    assert await table_rows(db_url, project) == [
        ("i1", "o", 1, "n1"),
        ("i2", "o", 2, "n2"),
        ("i3", "o", 3, "n3"),
    ]
    storage = open_storage(db_url, parse_schema(NICKNAME_SCHEMA))
    await storage.open()
    try:
        assert await storage.read_progress() == {1: ChainProgress(3, 3)}
    finally:
        await storage.close()
    remade = [r.getMessage() for r in caplog.records if "made its tables again" in r.getMessage()]
    assert remade == [
        f"the database at {db_url} was made for another schema (entity Item: field nickname "
        "(String) added) but holds nothing indexed yet: made its tables again"
    ]


async def test_a_config_change_before_any_commit_makes_the_tables_again(db):
    url = db()
    await _prepare(url, _sha256("config A"), {1: 1})

    state = await _prepare(url, _sha256("config B"), {1: 5, 10: 7})

    assert state.chains == {1: ChainProgress(4, 0), 10: ChainProgress(6, 0)}
    assert state.last_checkpoint == 0


async def test_without_stored_start_blocks_the_projects_tell_whether_a_chain_moved(db):
    url = db()
    await _prepare(url, _sha256("config A"), {1: 1})
    # As written before meta held the chains' start blocks.
    await _delete_meta(url, "chain_starts")

    # Block 0 is not the block before 5: it may be progress, so the database is kept.
    message = await _prepare_fails(url, SCHEMA, start=5)
    assert message == (
        f"the database at {url} holds an index made for another set of chains and contracts "
        f"(stored {_sha256('config A')}, this project {_sha256('config')})"
    )
    state = await _prepare(url, _sha256("config"), {1: 1})
    assert state.chains == {1: ChainProgress(0, 0)}


async def test_a_run_after_a_contract_address_was_added_names_it(tmp_path, db_url):
    from tests.support.scripted import TOKEN

    project, logs = three_blocks(tmp_path)
    _set_contract(project, [TOKEN], [TRANSFER])
    await Indexer(project, db_url, sources={1: ListSource(logs, 3)}).run()
    _set_contract(project, [TOKEN, ADDRESS_B], [TRANSFER])

    with pytest.raises(DatabaseMismatchError) as refused:
        await Indexer(project, db_url, sources={1: ListSource(logs, 3)}).run()

    assert refused.value.message == (
        f"the database at {db_url} holds an index made for another set of chains and contracts "
        f"(changed since: contract ERC20: address {ADDRESS_B} added)"
    )
    assert await table_rows(db_url, project) == ROWS
