"""One mistake of each kind, run through ``evmflow run`` as a user would make it.

Every case starts from a copy of the example whose database already holds the first blocks,
breaks one thing, runs, and checks that the error names the place (file and line, key,
entity and field, or handler, block and log index) and the fix, and that the database is
exactly as it was before.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.conftest import (
    EXAMPLE_DIR,
    assert_ran,
    chain_progress,
    dump_db,
    dump_sqlite,
    erc20_transfers,
    run_evmflow,
    sqlite_url,
)

FIRST_BLOCK = 17_686_110
FILLED_UP_TO = 17_686_115  # the database of every case holds blocks up to this one
NEXT_BLOCK = 17_686_116  # the first block the broken run would handle
END_BLOCK = 17_686_312
ARCHIVE = EXAMPLE_DIR / "data" / "firehose-17686110"


def _replace(path: Path, old: str, new: str) -> int:
    """Replace ``old`` (which must occur once) in a file; the 1-based line where it was."""
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times in {path}"
    line = text[: text.index(old)].count("\n") + 1
    path.write_text(text.replace(old, new))
    return line


@pytest.fixture(scope="module")
def filled_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example, indexed up to FILLED_UP_TO into its default SQLite file."""
    project = tmp_path_factory.mktemp("filled") / "erc20-mainnet"
    shutil.copytree(EXAMPLE_DIR, project, ignore=shutil.ignore_patterns(".evmflow", "__pycache__"))
    config = project / "evmflow.yaml"
    _replace(config, f"end_block: {END_BLOCK}", f"end_block: {FILLED_UP_TO}")
    assert_ran(run_evmflow("run", project))
    # The end block decides how far to run, not what is stored: the full range resumes.
    _replace(config, f"end_block: {FILLED_UP_TO}", f"end_block: {END_BLOCK}")
    return project


@pytest.fixture()
def project(filled_template: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "erc20-mainnet"
    shutil.copytree(filled_template, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


@pytest.fixture()
def before(project: Path) -> dict:
    dump = dump_sqlite(project / ".evmflow" / "index.db")
    assert chain_progress(dump) == {1: (FILLED_UP_TO, _transfers_up_to(FILLED_UP_TO))}
    return dump


def _transfers_up_to(block: int) -> int:
    rows = erc20_transfers(
        Path(f"{ARCHIVE}.logs.jsonl.gz"), Path(f"{ARCHIVE}.blocks.jsonl.gz"), 1, FIRST_BLOCK, block
    )
    return len(rows)


def _fails(project: Path, before: dict, user_traceback: bool = False) -> str:
    """Run the broken project: it must fail and leave the database as it was; its stderr.

    A mistake in the project shows no traceback, except the handler's own when one raised.
    """
    result = run_evmflow("run", project)
    assert result.returncode != 0, f"evmflow succeeded:\n{result.stderr}"
    assert ("Traceback" in result.stderr) == user_traceback, result.stderr
    assert dump_db(sqlite_url(project)) == before, "the database changed"
    return result.stderr


def _first_line(stderr: str) -> str:
    return next(line for line in stderr.splitlines() if line.startswith("error:"))


# --- evmflow.yaml ------------------------------------------------------------------------------


def test_broken_yaml_names_the_file_and_line(project: Path, before: dict):
    line = _replace(project / "evmflow.yaml", "events: [Transfer]", "events: [Transfer")

    stderr = _fails(project, before)

    assert "evmflow.yaml:" in stderr
    assert re.search(r"evmflow\.yaml:(\d+)", stderr)
    reported = int(re.search(r"evmflow\.yaml:(\d+)", stderr).group(1))  # type: ignore[union-attr]
    assert line <= reported <= line + 1  # the parser notices at the end of the flow list
    assert "invalid YAML" in stderr
    assert "fix:" in stderr


def test_unknown_key_names_the_key_its_line_and_the_right_spelling(project: Path, before: dict):
    line = _replace(project / "evmflow.yaml", "end_block:", "end_blok:")

    stderr = _fails(project, before)

    assert f"evmflow.yaml:{line}" in stderr
    assert "end_blok" in stderr
    assert "chains[0]" in stderr
    assert "end_block" in stderr.split("end_blok", 1)[1]  # the suggestion comes after it
    assert "fix:" in stderr


def test_missing_abi_file_names_the_path_and_line(project: Path, before: dict):
    line = _replace(project / "evmflow.yaml", "abi: abis/ERC20.json", "abi: abis/Token.json")

    stderr = _fails(project, before)

    assert f"evmflow.yaml:{line}" in stderr
    assert "Token.json" in stderr
    assert "contracts[0].abi" in stderr
    assert "fix:" in stderr


def test_event_not_in_the_abi_names_the_event_and_what_the_abi_has(project: Path, before: dict):
    line = _replace(project / "evmflow.yaml", "events: [Transfer]", "events: [Transferred]")

    stderr = _fails(project, before)

    assert f"evmflow.yaml:{line}" in stderr
    assert "'Transferred' is not in the ABI" in stderr
    assert "Transfer" in stderr.split("fix:", 1)[1]  # the fix lists the ABI's events
    assert "Approval" in stderr.split("fix:", 1)[1]


# --- schema.graphql ----------------------------------------------------------------------------


def test_schema_syntax_error_names_the_schema_file_and_line(project: Path, before: dict):
    line = _replace(project / "schema.graphql", "  transfers: Int!\n}", "  transfers: Int!\n")

    stderr = _fails(project, before)

    found = re.search(r"schema\.graphql:(\d+)", stderr)
    assert found, stderr
    assert line <= int(found.group(1)) <= line + 3
    assert "fix:" in stderr


def test_database_made_for_another_schema_says_to_reset(project: Path, before: dict):
    _replace(
        project / "schema.graphql", "  volume: BigInt!\n", "  volume: BigInt!\n  name: String\n"
    )

    stderr = _fails(project, before)

    assert "schema" in _first_line(stderr)
    assert "index.db" in stderr
    assert "--reset" in stderr.split("fix:", 1)[1]


def test_reset_then_indexes_the_changed_schema(project: Path, before: dict):
    # What the mismatch error tells the user to do works.
    _replace(
        project / "schema.graphql", "  volume: BigInt!\n", "  volume: BigInt!\n  name: String\n"
    )

    result = run_evmflow("run", project, "--reset")

    assert_ran(result)
    dump = dump_db(sqlite_url(project))
    assert chain_progress(dump) == {1: (END_BLOCK, 5177)}
    assert len(dump["Token"]) == 479
    assert all(row[3] is None for row in dump["Token"])  # the new, never-set field


# --- handlers ----------------------------------------------------------------------------------


def test_handler_for_an_event_that_is_not_indexed_names_the_handler_line(
    project: Path, before: dict
):
    handlers = project / "handlers.py"
    line = handlers.read_text().count("\n") + 3
    handlers.write_text(
        handlers.read_text()
        + "\n\n@ERC20.Approval.handler\nasync def on_approval(event, context):\n"
        "    pass\n"
    )

    stderr = _fails(project, before)

    assert f"handlers.py:{line}" in stderr
    assert "'Approval'" in stderr
    assert "Approval" in stderr.split("fix:", 1)[1] and "evmflow.yaml" in stderr.split("fix:")[1]


def test_handler_module_that_raises_at_import_names_file_line_and_error(
    project: Path, before: dict
):
    handlers = project / "handlers.py"
    text = handlers.read_text()
    handlers.write_text(text + "\nLIMITS = {'USDT': 6}\nDECIMALS = LIMITS['USDC']\n")
    line = text.count("\n") + 3

    stderr = _fails(project, before)

    assert f"handlers.py:{line}" in stderr
    assert "KeyError" in stderr and "USDC" in stderr
    assert "fix:" in stderr


def _first_transfer_log_index(block: int, nth: int) -> int:
    rows = erc20_transfers(
        Path(f"{ARCHIVE}.logs.jsonl.gz"), Path(f"{ARCHIVE}.blocks.jsonl.gz"), 1, block, block
    )
    return int(rows[nth][0].rsplit("-", 1)[1])


def test_handler_raising_during_processing_names_handler_block_and_log_index(
    project: Path, before: dict
):
    log_index = _first_transfer_log_index(NEXT_BLOCK, 3)
    _replace(
        project / "handlers.py",
        "    value = event.params.value\n",
        "    value = event.params.value\n"
        f"    if event.block_number == {NEXT_BLOCK} and event.log_index == {log_index}:\n"
        "        raise ValueError('price feed is down')\n",
    )

    stderr = _fails(project, before, user_traceback=True)

    message = _first_line(stderr)
    assert "on_transfer" in message
    assert f"block {NEXT_BLOCK}" in message
    assert f"log index {log_index}" in message
    assert "ValueError: price feed is down" in message
    assert "handlers.py" in stderr  # the handler's own traceback follows


def test_wrong_entity_field_type_names_entity_and_field(project: Path, before: dict):
    _replace(
        project / "handlers.py",
        "    token.transfers += 1\n",
        "    token.transfers = str(token.transfers + 1)\n",
    )

    stderr = _fails(project, before, user_traceback=True)

    assert "Token.transfers" in stderr
    assert "str" in stderr
    assert f"block {NEXT_BLOCK}" in stderr


# --- ABI files, command-line values ------------------------------------------------------------


def test_a_misspelt_type_in_the_abi_names_the_abi_file_and_line(project: Path, before: dict):
    abi = project / "abis" / "ERC20.json"
    text = abi.read_text()
    # The example's ABI lists an event's inputs before its name: the last address before
    # the name "Transfer" is that event's 'to'.
    at = text.rfind('"type": "address"', 0, text.index('"name": "Transfer"'))
    assert at > 0
    line = text.count("\n", 0, at) + 1
    abi.write_text(text[:at] + '"type": "adress"' + text[at + len('"type": "address"') :])

    stderr = _fails(project, before)

    assert _first_line(stderr) == (
        f"error: {abi}:{line}: contracts[0].abi: event Transfer input 1 (to): "
        "type 'adress' is not an ABI type"
    )
    assert "fix:" in stderr


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("sqlite://relative.db", "a SQLite URL starts with three slashes"),
        ("postgresql://postgres@127.0.0.1:notaport/postgres", "Port could not be cast"),
        ("postgresql://postgres:s3cret@127.0.0.1:99999/postgres", "Port out of range"),
    ],
)
def test_a_malformed_database_url_is_refused_before_anything_is_made(
    project: Path, before: dict, tmp_path: Path, url: str, says: str
):
    result = run_evmflow("run", project, "--db", url)

    assert result.returncode == 2, result.stderr
    assert _first_line(result.stderr).startswith("error: cannot read the ")
    assert says in result.stderr
    assert "s3cret" not in result.stderr
    assert "Traceback" not in result.stderr
    assert not (project / "sqlite:").exists() and not Path("sqlite:").exists()
    assert dump_db(sqlite_url(project)) == before


@pytest.mark.parametrize("size", ["0", "-5"])
def test_a_batch_size_below_one_is_refused(project: Path, before: dict, size: str):
    result = run_evmflow("run", project, "--batch-size", size)

    assert result.returncode == 2, result.stderr
    assert "--batch-size" in result.stderr and "x>=1" in result.stderr
    assert dump_db(sqlite_url(project)) == before
