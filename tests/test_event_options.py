"""Events listed with options: a start block of their own and filters on indexed parameters."""

from __future__ import annotations

import json

import pytest

from evmflow.config import load_config
from evmflow.engine import Indexer
from evmflow.errors import ConfigError
from tests.support import probe
from tests.support.forkable import ForkableChain, ForkableSource, transfer
from tests.support.scripted import write_project
from tests.test_multichain import CALL_ORDER_HANDLERS

RECEIVER = "0x" + "00" * 19 + "02"


def logs(number: int, branch: str) -> list:
    # Receivers 1, 2, 3 in turn; value encodes the position.
    return [transfer(number, i, 9, 1 + (number + i) % 3, number * 10 + i, branch) for i in range(3)]


def project_with(tmp_path, events) -> object:
    project = write_project(tmp_path / "p", handlers=CALL_ORDER_HANDLERS, end_block=8)
    config = json.loads((project / "evmflow.yaml").read_text())
    config["contracts"][0]["events"] = events
    (project / "evmflow.yaml").write_text(json.dumps(config))
    return project


async def test_where_and_start_block_select_exactly_the_matching_logs(tmp_path):
    chain = ForkableChain()
    chain.extend(8, "a", logs)
    project = project_with(
        tmp_path, [{"event": "Transfer", "start_block": 3, "where": {"to": [RECEIVER]}}]
    )
    probe.reset({})
    url = f"sqlite:///{tmp_path / 'i.db'}"
    await Indexer(project, url, sources={1: ForkableSource(chain, page_blocks=3)}).run()
    expected = [
        (log.block_number, log.log_index)
        for log in chain.all_logs()
        if log.block_number >= 3 and log.topics[2] == "0x" + "0" * 24 + RECEIVER[2:]
    ]
    assert [(b, i) for _, _, b, i in probe.READS] == expected
    assert len(expected) == 6


def test_where_on_a_parameter_that_is_not_indexed_names_the_indexed_ones(tmp_path):
    project = project_with(tmp_path, [{"event": "Transfer", "where": {"value": 5}}])
    with pytest.raises(ConfigError) as failure:
        load_config(project)
    text = str(failure.value)
    assert "contracts[0].events[0].where.value" in text
    assert "Transfer has no indexed parameter 'value'" in text
    assert "from, to" in text


def test_where_with_a_malformed_address_says_what_is_expected(tmp_path):
    project = project_with(tmp_path, [{"event": "Transfer", "where": {"to": "0x1234"}}])
    with pytest.raises(ConfigError) as failure:
        load_config(project)
    assert "expected a 0x-prefixed 20-byte address" in str(failure.value)


async def test_a_contract_with_thousands_of_addresses_is_fetched_by_topic(tmp_path):
    from evmflow.project import ADDRESS_LIST_LIMIT, load_project

    addresses = ["0x" + format(i, "040x") for i in range(1, ADDRESS_LIST_LIMIT + 2)]
    wanted = addresses[7]
    project = write_project(tmp_path / "p", handlers=CALL_ORDER_HANDLERS, end_block=3)
    config = json.loads((project / "evmflow.yaml").read_text())
    config["contracts"][0]["address"] = addresses
    (project / "evmflow.yaml").write_text(json.dumps(config))
    loaded = load_project(project)
    (only,) = loaded.filters(1)
    assert only.addresses is None  # no address list sent to the node

    # Logs of other contracts arrive (the fetch is by topic) and are dropped by the routes.
    chain = ForkableChain()

    def logs_of(number: int, branch: str) -> list:
        ours = transfer(number, 0, 1, 2, 3, branch)
        ours.address = wanted
        return [ours, transfer(number, 1, 1, 2, 3, branch)]  # the second: an unlisted token

    chain.extend(3, "a", logs_of)
    probe.reset({})
    await Indexer(
        loaded, f"sqlite:///{tmp_path / 'i.db'}", sources={1: ForkableSource(chain)}
    ).run()
    assert [(b, i) for _, _, b, i in probe.READS] == [(1, 0), (2, 0), (3, 0)]
