"""The bundled example, run through the ``evmflow`` command as a user runs it.

Every expected value is computed here from the raw JSONL archive with plain Python: an
ERC-20 Transfer is a log with Transfer's topic0, exactly three topics and 32 bytes of data.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import (
    EXAMPLE_DIR,
    Erc20Index,
    assert_erc20_index,
    assert_ran,
    chain_progress,
    dump_db,
    erc20_index,
    erc20_index_in_db,
    erc20_transfers,
    run_evmflow,
    sqlite_url,
)

CHAIN_ID = 1
START_BLOCK = 17_686_110
END_BLOCK = 17_686_312
ARCHIVE = EXAMPLE_DIR / "data" / "firehose-17686110"


@pytest.fixture(scope="module")
def expected() -> Erc20Index:
    transfers = erc20_transfers(
        Path(f"{ARCHIVE}.logs.jsonl.gz"),
        Path(f"{ARCHIVE}.blocks.jsonl.gz"),
        CHAIN_ID,
        START_BLOCK,
        END_BLOCK,
    )
    return erc20_index(transfers)


def test_the_archive_holds_erc20_and_other_transfers(expected: Erc20Index):
    # The data this file checks against: ERC-721 transfers share topic0 and must be left out.
    assert len(expected.transfers) == 5177
    assert len(expected.tokens) == 479
    assert len(expected.accounts) == 4792


def test_run_indexes_every_transfer_balance_and_token_volume(
    example_project: Path, db_url: str, backend: str, expected: Erc20Index
):
    # SQLite without --db: the default file in the project folder, as a new user runs it.
    args = [] if backend == "sqlite" else ["--db", db_url]
    url = sqlite_url(example_project) if backend == "sqlite" else db_url

    result = run_evmflow("run", example_project, *args)

    assert_ran(result)
    dump = dump_db(url)
    assert_erc20_index(erc20_index_in_db(dump), expected)
    assert chain_progress(dump) == {CHAIN_ID: (END_BLOCK, 5177)}
    assert "5177 events" in result.stderr


def test_second_run_processes_nothing_and_changes_nothing(example_project: Path, db_url: str):
    assert_ran(run_evmflow("run", example_project, "--db", db_url))
    before = dump_db(db_url)

    again = run_evmflow("run", example_project, "--db", db_url)

    assert_ran(again)
    assert "0 events in" in again.stderr
    assert f"at block {END_BLOCK}, 5177 events in total" in again.stderr
    assert dump_db(db_url) == before


def test_batch_sizes_and_no_pipeline_give_identical_tables(
    example_project: Path, db_url: str, expected: Erc20Index
):
    assert_ran(run_evmflow("run", example_project, "--db", db_url))
    reference = dump_db(db_url)
    assert_erc20_index(erc20_index_in_db(reference), expected)

    for options in (
        ["--batch-size", "1"],
        ["--batch-size", "7"],
        ["--batch-size", "5000"],
        ["--batch-size", "7", "--no-pipeline"],
    ):
        result = run_evmflow("run", example_project, "--db", db_url, "--reset", *options)
        assert_ran(result)
        assert "5177 events in" in result.stderr, options
        assert dump_db(db_url) == reference, f"tables differ with {options}"

    # The archive parsed in a child process instead of a thread.
    config = example_project / "evmflow.yaml"
    text = config.read_text()
    assert "      path: data/firehose-17686110\n" in text
    config.write_text(text.replace("      path:", "      reader: process\n      path:"))
    result = run_evmflow("run", example_project, "--db", db_url, "--reset")
    assert_ran(result)
    assert dump_db(db_url) == reference, "tables differ with reader: process"


def test_init_writes_a_project_that_runs(tmp_path: Path, expected: Erc20Index):
    project = tmp_path / "my-indexer"

    made = run_evmflow("init", project)

    assert_ran(made)
    assert "evmflow.yaml" in made.stdout
    assert "name: my-indexer" in (project / "evmflow.yaml").read_text()
    assert_ran(run_evmflow("run", project))
    dump = dump_db(sqlite_url(project))
    assert_erc20_index(erc20_index_in_db(dump), expected)


def test_init_refuses_a_directory_that_is_not_empty(tmp_path: Path):
    project = tmp_path / "taken"
    project.mkdir()
    (project / "notes.txt").write_text("mine\n")

    result = run_evmflow("init", project)

    assert result.returncode != 0
    assert "not empty" in result.stderr
    assert sorted(p.name for p in project.iterdir()) == ["notes.txt"]
