"""evmflow.yaml: what a good file loads into, and the one error each kind of mistake gives."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from eth_utils import keccak

from evmflow.abi import AbiParam, parse_event_signature
from evmflow.config import (
    ArchiveSourceConfig,
    ChainConfig,
    ContractConfig,
    EngineConfig,
    ProjectConfig,
    RpcSourceConfig,
    load_config,
)
from evmflow.errors import AbiError, ConfigError


def _event(name: str, *inputs: tuple[str, str, bool]) -> dict:
    return {
        "type": "event",
        "name": name,
        "anonymous": False,
        "inputs": [{"name": n, "type": t, "indexed": i} for n, t, i in inputs],
    }


ERC20_ABI = [
    {"type": "function", "name": "totalSupply", "inputs": [], "outputs": []},
    _event(
        "Transfer", ("from", "address", True), ("to", "address", True), ("value", "uint256", False)
    ),
    _event(
        "Approval",
        ("owner", "address", True),
        ("spender", "address", True),
        ("value", "uint256", False),
    ),
]
# Two events named Transfer, as in ERC-223 style tokens.
OVERLOADED_ABI = [
    _event(
        "Transfer", ("from", "address", True), ("to", "address", True), ("value", "uint256", False)
    ),
    _event(
        "Transfer",
        ("from", "address", True),
        ("to", "address", True),
        ("value", "uint256", False),
        ("data", "bytes", False),
    ),
]

USDT = "0xdAC17F958D2ee523a2206206994597C13D831ec7"

MINIMAL = """\
name: erc20-mainnet
chains:
  - id: 1
    rpc: {urls: "http://127.0.0.1:8545"}
contracts:
  - name: ERC20
    abi: abis/ERC20.json
    events: [Transfer]
"""


def topic(signature: str) -> str:
    return "0x" + keccak(text=signature).hex()


def make_project(root: Path, yaml_text: str, *, handlers: str | None = "handlers.py") -> Path:
    """A project directory with evmflow.yaml, schema.graphql, two ABIs and a handler file."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "evmflow.yaml").write_text(textwrap.dedent(yaml_text))
    (root / "schema.graphql").write_text("type Transfer @entity { id: ID! }\n")
    (root / "abis").mkdir(exist_ok=True)
    (root / "abis" / "ERC20.json").write_text(json.dumps(ERC20_ABI))
    (root / "abis" / "Overloaded.json").write_text(json.dumps(OVERLOADED_ABI))
    if handlers == "handlers.py":
        (root / "handlers.py").write_text("")
    elif handlers == "handlers/":
        (root / "handlers").mkdir()
        (root / "handlers" / "tokens.py").write_text("")
    return root


def config_error(root: Path, yaml_text: str) -> ConfigError:
    make_project(root, yaml_text)
    with pytest.raises(ConfigError) as caught:
        load_config(root)
    return caught.value


# --- good configs -----------------------------------------------------------------------------


def test_full_config_loads_every_key_with_paths_made_absolute(tmp_path, monkeypatch):
    monkeypatch.setenv("API_KEY", "s3cret")
    root = make_project(
        tmp_path / "proj",
        f"""\
        name: erc20-mainnet
        schema: schema.graphql
        handlers: handlers.py
        database: sqlite:///index.db
        engine:
          batch_size: 1000
          max_uncommitted: 5000
          pipeline: false
        chains:
          - id: 1
            start_block: 17686110
            end_block: 17686312
            max_reorg_depth: 64
            rollback_on_reorg: false
            rpc:
              urls: ["https://eth.example/${{API_KEY}}", "http://127.0.0.1:8545"]
              request_timeout: 10.5
              max_block_range: 500
              concurrency: 2
              poll_interval: 0.5
              block_lag: 3
              headers: {{Authorization: "Bearer ${{API_KEY}}"}}
        contracts:
          - name: ERC20
            abi: abis/ERC20.json
            address: {USDT}
            events:
              - Transfer
              - "Approval(address indexed owner, address indexed spender, uint256 value)"
            chains: [1]
            start_block: 17686120
        """,
    )

    config = load_config(root)

    assert config.name == "erc20-mainnet"
    assert config.root == root.resolve()
    assert config.path == root.resolve() / "evmflow.yaml"
    assert config.schema_path == root.resolve() / "schema.graphql"
    assert config.handlers == [root.resolve() / "handlers.py"]
    assert config.database == "sqlite:///index.db"
    assert config.engine == EngineConfig(batch_size=1000, max_uncommitted=5000, pipeline=False)
    assert config.chains == [
        ChainConfig(
            id=1,
            start_block=17686110,
            end_block=17686312,
            max_reorg_depth=64,
            rollback_on_reorg=False,
            rpc=RpcSourceConfig(
                urls=["https://eth.example/s3cret", "http://127.0.0.1:8545"],
                request_timeout=10.5,
                max_block_range=500,
                concurrency=2,
                poll_interval=0.5,
                block_lag=3,
                headers={"Authorization": "Bearer s3cret"},
            ),
        )
    ]
    [contract] = config.contracts
    assert contract.name == "ERC20"
    assert contract.abi == root.resolve() / "abis" / "ERC20.json"
    assert contract.addresses == ["0xdac17f958d2ee523a2206206994597c13d831ec7"]
    assert contract.events == [
        "Transfer",
        "Approval(address indexed owner, address indexed spender, uint256 value)",
    ]
    assert contract.chains == [1]
    assert contract.start_block == 17686120
    assert [e.signature for e in contract.event_abis] == [
        "Transfer(address,address,uint256)",
        "Approval(address,address,uint256)",
    ]
    assert [e.topic0 for e in contract.event_abis] == [
        "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef",
        topic("Approval(address,address,uint256)"),
    ]
    assert [p.indexed for p in contract.event_abis[0].inputs] == [True, True, False]


def test_minimal_config_takes_the_documented_defaults(tmp_path):
    root = make_project(tmp_path, MINIMAL)

    config = load_config(root / "evmflow.yaml")

    assert config.database is None
    assert config.engine == EngineConfig(batch_size=5000, max_uncommitted=250_000, pipeline=True)
    [chain] = config.chains
    assert (chain.start_block, chain.end_block, chain.max_reorg_depth) == (0, None, 200)
    assert chain.rollback_on_reorg is True
    assert chain.archive is None
    assert chain.rpc == RpcSourceConfig(urls=["http://127.0.0.1:8545"])
    assert (chain.rpc.request_timeout, chain.rpc.max_block_range, chain.rpc.concurrency) == (
        30.0,
        2000,
        4,
    )
    assert (chain.rpc.poll_interval, chain.rpc.block_lag, chain.rpc.headers) == (1.0, 0, {})
    [contract] = config.contracts
    assert contract.addresses == []
    assert contract.start_block is None


def test_contract_without_chains_gets_every_declared_chain(tmp_path):
    root = make_project(
        tmp_path,
        """\
        name: two-chains
        chains:
          - {id: 1, rpc: {urls: "http://127.0.0.1:8545"}}
          - {id: 10, rpc: {urls: "http://127.0.0.1:8546"}}
        contracts:
          - {name: Everywhere, abi: abis/ERC20.json, events: Transfer}
          - {name: OnlyTen, abi: abis/ERC20.json, events: [Approval], chains: [10]}
        """,
    )

    config = load_config(root)

    assert [c.chains for c in config.contracts] == [[1, 10], [10]]
    assert config.chain(10).rpc.urls == ["http://127.0.0.1:8546"]


def test_unquoted_address_with_leading_zeros_stays_an_address(tmp_path):
    # YAML 1.1 reads 0x... as an integer, which would drop the leading zeros.
    address = "0x00000000219ab540356cBB839Cbe05303d7705Fa"
    root = make_project(
        tmp_path,
        MINIMAL.replace(
            "    events: [Transfer]", f"    events: [Transfer]\n    address: {address}"
        ),
    )

    assert load_config(root).contracts[0].addresses == [address.lower()]


def test_address_list_is_lowercased_and_duplicates_dropped(tmp_path):
    root = make_project(
        tmp_path,
        MINIMAL.replace(
            "    events: [Transfer]",
            f"    events: [Transfer]\n    address: [{USDT}, '{USDT.lower()}']",
        ),
    )

    assert load_config(root).contracts[0].addresses == [USDT.lower()]


def test_hex_block_numbers_are_read_as_numbers(tmp_path):
    root = make_project(
        tmp_path, MINIMAL.replace("  - id: 1\n", "  - id: 1\n    start_block: 0x10\n")
    )

    assert load_config(root).chains[0].start_block == 16


def test_handlers_default_to_the_handlers_directory_when_there_is_no_handlers_py(tmp_path):
    root = make_project(tmp_path / "a", MINIMAL, handlers="handlers/")
    assert load_config(root).handlers == [root.resolve() / "handlers"]

    bare = make_project(tmp_path / "b", MINIMAL, handlers=None)
    assert load_config(bare).handlers == []


def test_handlers_may_list_files_and_package_directories(tmp_path):
    root = make_project(tmp_path, MINIMAL + "handlers: [handlers.py, more]\n")
    (root / "more").mkdir()

    assert load_config(root).handlers == [root.resolve() / "handlers.py", root.resolve() / "more"]


def test_full_signature_picks_one_of_overloaded_events(tmp_path):
    root = make_project(
        tmp_path,
        MINIMAL.replace("abis/ERC20.json", "abis/Overloaded.json").replace(
            "events: [Transfer]", 'events: ["Transfer(address,address,uint256,bytes)"]'
        ),
    )

    [event] = load_config(root).contracts[0].event_abis

    assert event.signature == "Transfer(address,address,uint256,bytes)"
    assert event.topic0 == topic("Transfer(address,address,uint256,bytes)")
    assert [p.name for p in event.inputs] == ["from", "to", "value", "data"]


def test_archive_directory_holds_logs_and_blocks(tmp_path):
    archive = tmp_path / "data" / "dump"
    archive.mkdir(parents=True)
    (archive / "logs.jsonl.gz").write_bytes(b"")
    (archive / "blocks.jsonl").write_text("")
    root = make_project(
        tmp_path,
        MINIMAL.replace('rpc: {urls: "http://127.0.0.1:8545"}', "archive: {path: data/dump}"),
    )

    chain = load_config(root).chains[0]

    assert chain.rpc is None
    assert chain.archive == ArchiveSourceConfig(path=archive.resolve())
    assert chain.archive.logs_file() == archive.resolve() / "logs.jsonl.gz"
    assert chain.archive.blocks_file() == archive.resolve() / "blocks.jsonl"


def test_archive_prefix_names_logs_file_and_blocks_may_be_absent(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "firehose-17686110.logs.jsonl.gz").write_bytes(b"")
    root = make_project(
        tmp_path,
        MINIMAL.replace(
            'rpc: {urls: "http://127.0.0.1:8545"}', "archive: {path: data/firehose-17686110}"
        ),
    )

    archive = load_config(root).chains[0].archive

    assert archive.logs_file() == tmp_path.resolve() / "data" / "firehose-17686110.logs.jsonl.gz"
    assert archive.blocks_file() is None


def test_models_check_values_when_built_without_a_file():
    with pytest.raises(ValueError):
        ContractConfig.model_validate({"name": "class", "abi": "x.json", "events": ["A"]})
    assert ProjectConfig.model_fields["schema_path"].alias == "schema"


# --- fingerprint ------------------------------------------------------------------------------


def _fingerprint(root: Path, yaml_text: str) -> str:
    return load_config(make_project(root, yaml_text)).fingerprint()


def test_fingerprint_ignores_end_block_urls_and_engine(tmp_path):
    base = _fingerprint(tmp_path / "a", MINIMAL)
    changed = MINIMAL.replace("  - id: 1\n", "  - id: 1\n    end_block: 99\n")
    changed = changed.replace("8545", "9999") + "engine: {batch_size: 7}\n"

    assert _fingerprint(tmp_path / "b", changed) == base
    assert len(base) == 64


def test_fingerprint_changes_with_start_block_address_and_events(tmp_path):
    base = _fingerprint(tmp_path / "a", MINIMAL)
    variants = [
        MINIMAL.replace("  - id: 1\n", "  - id: 1\n    start_block: 5\n"),
        MINIMAL.replace("events: [Transfer]", f"events: [Transfer]\n    address: {USDT}"),
        MINIMAL.replace("events: [Transfer]", "events: [Transfer, Approval]"),
        MINIMAL.replace("events: [Transfer]", "events: [Transfer]\n    start_block: 5"),
    ]

    prints = [_fingerprint(tmp_path / f"v{i}", text) for i, text in enumerate(variants)]

    assert base not in prints
    assert len(set(prints)) == len(variants)


# --- errors: one per kind of mistake ----------------------------------------------------------


def test_broken_yaml_names_the_line(tmp_path):
    error = config_error(tmp_path, "name: x\nchains: [1, 2\ncontracts: []\n")

    assert str(error) == (
        f"{tmp_path.resolve()}/evmflow.yaml:3: invalid YAML: expected ',' or ']', but got ':'\n"
        "  fix: fix the YAML syntax (indentation, ':' after keys, closing brackets/quotes)"
    )
    assert error.line == 3


def test_unknown_key_suggests_the_nearest_and_lists_the_allowed(tmp_path):
    error = config_error(tmp_path, MINIMAL.replace("  - id: 1\n", "  - id: 1\n    start_blok: 5\n"))

    assert str(error) == (
        f"{tmp_path.resolve()}/evmflow.yaml:4: chains[0]: unknown key 'start_blok'\n"
        "  fix: did you mean 'start_block'? allowed keys here: id, start_block, end_block, "
        "max_reorg_depth, rollback_on_reorg, rpc, archive"
    )


def test_unknown_top_level_key(tmp_path):
    error = config_error(tmp_path, MINIMAL + "contract: []\n")

    assert (error.line, error.where, error.message) == (9, None, "unknown key 'contract'")
    assert error.hint.startswith("did you mean 'contracts'? allowed keys here: name, schema,")


def test_wrong_type_says_what_was_expected_and_what_was_found(tmp_path):
    error = config_error(tmp_path, MINIMAL + "engine:\n  batch_size: lots\n")

    assert str(error) == (
        f"{tmp_path.resolve()}/evmflow.yaml:10: engine.batch_size: "
        "expected a whole number, got 'lots'"
    )


def test_a_value_outside_a_fixed_set_lists_the_set_and_the_nearest(tmp_path):
    error = config_error(tmp_path, MINIMAL + "engine:\n  preload: alway\n")

    assert (error.line, error.where, error.message, error.hint) == (
        10,
        "engine.preload",
        "must be one of always or auto, got 'alway'",
        "did you mean 'always'? write one of: always or auto",
    )


def test_number_where_text_is_expected_suggests_quotes(tmp_path):
    error = config_error(tmp_path, MINIMAL.replace("name: erc20-mainnet", "name: 2024"))

    assert (error.line, error.where, error.message, error.hint) == (
        1,
        "name",
        "expected text, got 2024",
        "put the value in quotes",
    )


def test_out_of_range_value(tmp_path):
    error = config_error(tmp_path, MINIMAL + "engine: {batch_size: 0}\n")

    assert (error.line, error.where, error.message) == (
        9,
        "engine.batch_size",
        "must be greater than 0, got 0",
    )


def test_missing_required_key_names_it_at_its_parent(tmp_path):
    error = config_error(tmp_path, MINIMAL.replace("    abi: abis/ERC20.json\n", ""))

    assert str(error) == (
        f"{tmp_path.resolve()}/evmflow.yaml:6: contracts[0]: missing required key 'abi'\n"
        "  fix: add 'abi:' here"
    )


def test_missing_top_level_key(tmp_path):
    error = config_error(tmp_path, "name: x\nchains: [{id: 1, rpc: {urls: 'http://a'}}]\n")

    assert str(error) == (
        f"{tmp_path.resolve()}/evmflow.yaml: missing required key 'contracts'\n"
        "  fix: add 'contracts:' here"
    )


def test_empty_chain_list(tmp_path):
    error = config_error(
        tmp_path,
        MINIMAL.replace(
            'chains:\n  - id: 1\n    rpc: {urls: "http://127.0.0.1:8545"}\n', "chains: []\n"
        ),
    )

    assert (error.line, error.where, error.message) == (2, "chains", "must not be empty")


def test_bad_project_name(tmp_path):
    error = config_error(tmp_path, MINIMAL.replace("erc20-mainnet", "my indexer"))

    assert str(error) == (
        f"{tmp_path.resolve()}/evmflow.yaml:1: name: project name 'my indexer' may only hold "
        "letters, digits, '-' and '_'\n  fix: e.g. name: erc20-mainnet"
    )


def test_bad_address(tmp_path):
    error = config_error(
        tmp_path, MINIMAL.replace("events: [Transfer]", "events: [Transfer]\n    address: [0x12]")
    )

    assert (error.line, error.where, error.message) == (
        9,
        "contracts[0].address[0]",
        "'0x12' is not a contract address",
    )
    assert error.hint.startswith("write 0x followed by 40 hex digits")


def test_contract_name_must_be_a_python_identifier(tmp_path):
    error = config_error(tmp_path, MINIMAL.replace("name: ERC20", "name: my-token"))

    assert (error.line, error.where) == (6, "contracts[0].name")
    assert error.message == "contract name 'my-token' is not a Python identifier"


def test_undefined_environment_variable_is_named(tmp_path, monkeypatch):
    monkeypatch.delenv("EVMFLOW_TEST_UNSET_KEY", raising=False)
    error = config_error(
        tmp_path,
        MINIMAL.replace(
            'urls: "http://127.0.0.1:8545"', 'urls: ["http://a/${EVMFLOW_TEST_UNSET_KEY}"]'
        ),
    )

    assert str(error) == (
        f"{tmp_path.resolve()}/evmflow.yaml:4: chains[0].rpc.urls[0]: environment variable "
        "EVMFLOW_TEST_UNSET_KEY is not set (used as ${EVMFLOW_TEST_UNSET_KEY})\n"
        "  fix: export EVMFLOW_TEST_UNSET_KEY=... before running evmflow, or write the value here"
    )


def test_undefined_variable_in_a_header(tmp_path, monkeypatch):
    monkeypatch.delenv("EVMFLOW_TEST_TOKEN", raising=False)
    error = config_error(
        tmp_path,
        MINIMAL.replace(
            'rpc: {urls: "http://127.0.0.1:8545"}',
            'rpc:\n      urls: "http://127.0.0.1:8545"\n'
            '      headers:\n        Authorization: "Bearer ${EVMFLOW_TEST_TOKEN}"',
        ),
    )

    assert (error.line, error.where) == (7, "chains[0].rpc.headers.Authorization")
    assert "EVMFLOW_TEST_TOKEN is not set" in error.message


def test_chain_needs_a_source(tmp_path):
    error = config_error(
        tmp_path, MINIMAL.replace('    rpc: {urls: "http://127.0.0.1:8545"}\n', "")
    )

    assert str(error) == (
        f"{tmp_path.resolve()}/evmflow.yaml:3: chains[0]: chain 1 has neither 'rpc' nor "
        "'archive'\n  fix: give it a source: rpc: {urls: [...]}, archive: {path: ...}, or both "
        "(the archive first, then the node from the block after the archive's last)"
    )


def test_end_block_below_start_block(tmp_path):
    error = config_error(
        tmp_path,
        MINIMAL.replace("  - id: 1\n", "  - id: 1\n    start_block: 10\n    end_block: 9\n"),
    )

    assert (error.line, error.where, error.message) == (
        5,
        "chains[0].end_block",
        "end_block 9 is below start_block 10",
    )


def test_chain_with_both_sources_reads_the_archive_then_the_node(tmp_path):
    from evmflow.engine import make_source
    from evmflow.sources.handover import HandoverSource

    (tmp_path / "dump").mkdir()
    (tmp_path / "dump" / "logs.jsonl").write_text("")
    make_project(tmp_path, MINIMAL.replace("  - id: 1\n", "  - id: 1\n    archive: {path: dump}\n"))
    config = load_config(tmp_path)

    source = make_source(None, config.chains[0])  # type: ignore[arg-type]
    assert isinstance(source, HandoverSource)
    assert source.archive.logs_file == (tmp_path / "dump" / "logs.jsonl").resolve()
    assert source.rpc.chain_id == 1


def test_null_value_asks_for_a_value(tmp_path):
    error = config_error(tmp_path, MINIMAL.replace("name: erc20-mainnet", "name:"))

    assert (error.line, error.where, error.message, error.hint) == (
        1,
        "name",
        "expected text, got nothing (null)",
        "give this key a value, or leave the key out if it is optional",
    )


def test_rpc_url_must_be_http(tmp_path):
    error = config_error(tmp_path, MINIMAL.replace("http://127.0.0.1:8545", "wss://node"))

    assert (error.line, error.where, error.message) == (
        4,
        "chains[0].rpc.urls[0]",
        "'wss://node' is not an HTTP URL",
    )


def test_unknown_database_url(tmp_path):
    error = config_error(tmp_path, MINIMAL + "database: mysql://x\n")

    assert (error.line, error.where, error.message) == (
        9,
        "database",
        "'mysql://x' is not a database URL evmflow knows",
    )


def test_duplicate_yaml_key(tmp_path):
    error = config_error(tmp_path, MINIMAL + "name: again\n")

    assert str(error) == (
        f"{tmp_path.resolve()}/evmflow.yaml:9: key 'name' appears twice (first on line 1)\n"
        "  fix: keep one of them"
    )


def test_missing_abi_file(tmp_path):
    error = config_error(tmp_path, MINIMAL.replace("abis/ERC20.json", "abis/Missing.json"))

    assert str(error) == (
        f"{tmp_path.resolve()}/evmflow.yaml:7: contracts[0].abi: ABI file not found: "
        f"{tmp_path.resolve()}/abis/Missing.json\n  fix: save the contract's ABI JSON there, "
        "or fix the path (relative to the project directory)"
    )


def test_abi_file_with_broken_json_points_into_the_abi(tmp_path):
    make_project(tmp_path, MINIMAL)
    (tmp_path / "abis" / "ERC20.json").write_text('[\n  {"type": "event",\n')

    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path)

    error = caught.value
    assert (error.file, error.line, error.where) == (
        str(tmp_path.resolve() / "abis" / "ERC20.json"),
        3,
        "contracts[0].abi",
    )
    assert error.message.startswith("not valid JSON:")


def test_missing_schema_file(tmp_path):
    make_project(tmp_path, MINIMAL + "schema: entities.graphql\n")

    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path)

    assert str(caught.value) == (
        f"{tmp_path.resolve()}/evmflow.yaml:9: schema: schema file not found: "
        f"{tmp_path.resolve()}/entities.graphql\n"
        "  fix: create schema.graphql with your entities, or set 'schema:' to its path"
    )


def test_missing_handler_file(tmp_path):
    error = config_error(tmp_path, MINIMAL + "handlers: [handlers.py, missing.py]\n")

    assert (error.line, error.where, error.message) == (
        9,
        "handlers[1]",
        f"handler file not found: {tmp_path.resolve()}/missing.py",
    )


def test_missing_archive_files(tmp_path):
    error = config_error(
        tmp_path,
        MINIMAL.replace('rpc: {urls: "http://127.0.0.1:8545"}', "archive: {path: data/none}"),
    )

    data = tmp_path.resolve() / "data"
    assert (error.line, error.where) == (4, "chains[0].archive.path")
    assert error.message == (
        f"archive has no logs file (looked for {data}/none.logs.jsonl, {data}/none.logs.jsonl.gz)"
    )


def test_event_not_in_the_abi_lists_the_abi_events(tmp_path):
    error = config_error(
        tmp_path, MINIMAL.replace("events: [Transfer]", "events: [Transfer, Mint]")
    )

    assert str(error) == (
        f"{tmp_path.resolve()}/evmflow.yaml:8: contracts[0].events[1]: event 'Mint' is not in "
        "the ABI\n  fix: the ABI has: Transfer(address,address,uint256), "
        "Approval(address,address,uint256)"
    )


def test_full_signature_not_in_the_abi(tmp_path):
    error = config_error(
        tmp_path, MINIMAL.replace("events: [Transfer]", 'events: ["Transfer(address,uint256)"]')
    )

    assert (error.where, error.message) == (
        "contracts[0].events[0]",
        "event Transfer(address,uint256) is not in the ABI",
    )


def test_overloaded_event_name_asks_for_the_signature(tmp_path):
    error = config_error(tmp_path, MINIMAL.replace("abis/ERC20.json", "abis/Overloaded.json"))

    assert str(error) == (
        f"{tmp_path.resolve()}/evmflow.yaml:8: contracts[0].events[0]: event 'Transfer' is "
        "overloaded in the ABI\n  fix: write the full signature of the one you want: "
        "Transfer(address,address,uint256) or Transfer(address,address,uint256,bytes)"
    )


def test_signature_with_wrong_indexed_inputs(tmp_path):
    error = config_error(
        tmp_path,
        MINIMAL.replace(
            "events: [Transfer]", 'events: ["Transfer(address indexed, address, uint256 indexed)"]'
        ),
    )

    assert error.message == (
        "the indexed inputs of 'Transfer(address indexed, address, uint256 indexed)' differ "
        "from the ABI's Transfer(address indexed,address indexed,uint256)"
    )


def test_unreadable_signature(tmp_path):
    error = config_error(
        tmp_path, MINIMAL.replace("events: [Transfer]", 'events: ["Transfer(address,uint7)"]')
    )

    assert (error.where, error.message) == (
        "contracts[0].events[0]",
        "cannot read event signature 'Transfer(address,uint7)': unknown type 'uint7' at "
        "character 18",
    )


def test_duplicate_chain_id(tmp_path):
    error = config_error(
        tmp_path,
        MINIMAL.replace("contracts:", "  - {id: 1, rpc: {urls: 'http://b'}}\ncontracts:"),
    )

    assert str(error) == (
        f"{tmp_path.resolve()}/evmflow.yaml:5: chains[1].id: chain id 1 is declared twice "
        "(also chains[0])\n  fix: declare each chain once; one chain may serve many contracts"
    )


def test_duplicate_contract_name(tmp_path):
    error = config_error(
        tmp_path, MINIMAL + "  - {name: ERC20, abi: abis/ERC20.json, events: [Approval]}\n"
    )

    assert (error.line, error.where) == (9, "contracts[1].name")
    assert error.message == "contract name 'ERC20' is used twice (also contracts[0])"


def test_contract_on_undeclared_chain(tmp_path):
    error = config_error(tmp_path, MINIMAL + "    chains: [1, 137]\n")

    assert str(error) == (
        f"{tmp_path.resolve()}/evmflow.yaml:9: contracts[0].chains[1]: chain 137 is not "
        "declared under 'chains'\n  fix: declared chain ids: 1; add chain 137 to 'chains' or "
        "fix the id"
    )


def test_project_directory_without_config(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path)

    assert str(caught.value) == (
        f"{tmp_path}: no evmflow.yaml in this directory\n"
        "  fix: run 'evmflow init' to start a project, or pass the path to the config file"
    )


def test_config_that_is_not_a_mapping(tmp_path):
    error = config_error(tmp_path, "- just\n- a list\n")

    assert (
        error.message
        == "the config must be a mapping of keys (name, chains, contracts, ...), got a list"
    )
    assert error.line == 1


# --- hand-written event signatures ------------------------------------------------------------


def test_signature_with_names_indexed_and_solidity_spelling():
    event = parse_event_signature("event Approval(address indexed owner, address spender, uint v);")

    assert event.signature == "Approval(address,address,uint256)"
    assert event.inputs == (
        AbiParam("owner", "address", True),
        AbiParam("spender", "address", False),
        AbiParam("v", "uint256", False),
    )


def test_signature_with_tuples_and_arrays():
    event = parse_event_signature(
        "Swap((uint,address)[] indexed legs, tuple(bytes32,int8) t, bytes32[2][] x)"
    )

    assert event.signature == "Swap((uint256,address)[],(bytes32,int8),bytes32[2][])"
    assert event.topic0 == topic("Swap((uint256,address)[],(bytes32,int8),bytes32[2][])")
    assert event.inputs[0].components == (AbiParam("", "uint256"), AbiParam("", "address"))


def test_signature_errors_say_where():
    with pytest.raises(AbiError) as caught:
        parse_event_signature("Transfer(address,address")

    assert caught.value.message == (
        "cannot read event signature 'Transfer(address,address': expected ')', found the end "
        "at character 25"
    )


def test_environment_variables_fill_any_value_numbers_and_paths_included(tmp_path, monkeypatch):
    monkeypatch.setenv("EVMFLOW_TEST_DUMP", "dump")
    monkeypatch.setenv("EVMFLOW_TEST_START", "0x10")
    monkeypatch.setenv("EVMFLOW_TEST_END", "40")
    (tmp_path / "dump").mkdir()
    (tmp_path / "dump" / "logs.jsonl").write_text("")
    make_project(
        tmp_path,
        MINIMAL.replace(
            '    rpc: {urls: "http://127.0.0.1:8545"}\n',
            "    start_block: ${EVMFLOW_TEST_START}\n"
            "    end_block: ${EVMFLOW_TEST_END}\n"
            "    archive:\n      path: ${EVMFLOW_TEST_DUMP}\n",
        ),
    )

    chain = load_config(tmp_path).chains[0]

    assert (chain.start_block, chain.end_block) == (16, 40)
    assert chain.archive is not None
    assert chain.archive.logs_file() == (tmp_path / "dump" / "logs.jsonl").resolve()


def test_an_unset_variable_anywhere_names_its_key_and_line(tmp_path, monkeypatch):
    monkeypatch.delenv("EVMFLOW_TEST_UNSET", raising=False)
    error = config_error(
        tmp_path,
        MINIMAL.replace("  - id: 1\n", "  - id: 1\n    start_block: ${EVMFLOW_TEST_UNSET}\n"),
    )

    assert (error.line, error.where, error.message) == (
        4,
        "chains[0].start_block",
        "environment variable EVMFLOW_TEST_UNSET is not set (used as ${EVMFLOW_TEST_UNSET})",
    )
