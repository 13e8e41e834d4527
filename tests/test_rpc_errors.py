"""How the answers of real nodes and providers to a too-large eth_getLogs are read."""

from __future__ import annotations

import pytest

from evmflow.sources.rpc_errors import RangeRefusal, classify_getlogs_error, next_to_block

ALCHEMY = (
    "Log response size exceeded. You can make eth_getLogs requests with up to a 2K block range "
    "and no limit on the response size, or you can request any block range with a cap of 10K "
    "logs in the response. Based on your parameters and the response size limit, this block "
    "range should work: [0x10b10b2, 0x10b1170]"
)

# (provider, code, message, data, expected refusal)
REFUSALS = [
    ("geth", -32000, "query returned more than 10000 results", None, RangeRefusal()),
    ("alchemy", -32602, ALCHEMY, None, RangeRefusal(suggested=(0x10B10B2, 0x10B1170))),
    (
        "alchemy-free-tier",
        -32600,
        "Under the Free tier plan, you can make eth_getLogs requests with up to a 10 block "
        "range. Based on your parameters, this block range should work: [0x1, 0xa]",
        None,
        RangeRefusal(suggested=(1, 10)),
    ),
    (
        "infura-32005",
        -32005,
        "query returned more than 10000 results",
        {"from": "0x10b10b2", "limit": 10000, "to": "0x10b10c9"},
        RangeRefusal(suggested=(0x10B10B2, 0x10B10C9)),
    ),
    (
        "infura-32602",
        -32602,
        "range 1000000 exceeds limit of 10000",
        None,
        RangeRefusal(max_blocks=10000),
    ),
    (
        "quicknode-range",
        -32614,
        "eth_getLogs is limited to a 10,000 range",
        None,
        RangeRefusal(max_blocks=10000),
    ),
    (
        "quicknode-blocks",
        -32602,
        "eth_getLogs and eth_newFilter are limited to 5 blocks",
        None,
        RangeRefusal(max_blocks=5),
    ),
    ("ankr", -32600, "block range is too wide", None, RangeRefusal()),
    (
        "frontier",
        -32603,
        "block range is too wide (maximum 1024)",
        None,
        RangeRefusal(max_blocks=1024),
    ),
    ("cloudflare", -32047, "Max range: 800", None, RangeRefusal(max_blocks=800)),
    (
        "drpc",
        35,
        "ranges over 10000 blocks are not supported on freetier",
        None,
        RangeRefusal(max_blocks=10000),
    ),
    (
        "publicnode",
        -32000,
        "exceed maximum block range: 50000",
        None,
        RangeRefusal(max_blocks=50000),
    ),
    (
        "reth-results",
        -32602,
        "query exceeds max results 20000, retry with the range 25766988-25775072",
        None,
        RangeRefusal(suggested=(25766988, 25775072)),
    ),
    (
        "reth-range",
        -32602,
        "query exceeds max block range 1000",
        None,
        RangeRefusal(max_blocks=1000),
    ),
    (
        "erigon-results",
        -32000,
        "query returns too many logs, narrow your filter: 20000",
        None,
        RangeRefusal(),
    ),
    (
        "erigon-range",
        -32000,
        "query block range exceeds server limit, narrow your filter: 1000",
        None,
        RangeRefusal(max_blocks=1000),
    ),
    (
        "tenderly",
        -32602,
        "invalid params",
        {"error_id": "4ed9", "payload": "range 9009594 is bigger than range limit 2000"},
        RangeRefusal(max_blocks=2000),
    ),
    (
        "zksync",
        -32602,
        "Query returned more than 10000 results. Try with this block range [0x0, 0x30f].",
        None,
        RangeRefusal(suggested=(0, 0x30F)),
    ),
    (
        "zksync-size",
        -32008,
        "Response is too big",
        "Exceeded max limit of 10485760",
        RangeRefusal(),
    ),
    (
        "cdk-erigon",
        -32005,
        "block range too large, max range: 1000",
        None,
        RangeRefusal(max_blocks=1000),
    ),
    ("scroll", -32000, "block range is bigger than maxBlockRange", None, RangeRefusal()),
    ("generic-range", -32000, "range too large", None, RangeRefusal()),
    ("generic-too-many", -32000, "too many logs in response", None, RangeRefusal()),
    (
        "geth-beyond-head",
        -32602,
        "block range extends beyond current head block",
        None,
        RangeRefusal(beyond_head=True),
    ),
]


@pytest.mark.parametrize(
    ("code", "message", "data", "expected"),
    [case[1:] for case in REFUSALS],
    ids=[case[0] for case in REFUSALS],
)
def test_provider_refusal_is_read_as_range_refusal(code, message, data, expected):
    assert classify_getlogs_error(code, message, data) == expected


NOT_REFUSALS = [
    ("rate-limit-429-text", 429, "Too many requests, please slow down"),
    ("infura-rate", -32005, "daily request count exceeded, request rate limited"),
    ("alchemy-cu", 429, "Your app has exceeded its compute units per second capacity."),
    ("header-not-found", -32000, "header not found"),
    ("method-missing", -32601, "the method eth_getLogs does not exist/is not available"),
]


@pytest.mark.parametrize(
    ("code", "message"),
    [case[1:] for case in NOT_REFUSALS],
    ids=[case[0] for case in NOT_REFUSALS],
)
def test_other_errors_are_not_range_refusals(code, message):
    assert classify_getlogs_error(code, message) is None


@pytest.mark.parametrize(
    ("request_range", "refusal", "expected_to"),
    [
        # a suggestion inside the request is taken as is
        ((100, 2099), RangeRefusal(suggested=(100, 600)), 600),
        # a suggestion equal to the refused request is not retried: halve
        ((100, 2099), RangeRefusal(suggested=(100, 2099)), 1099),
        # a suggestion wider than the request is useless: halve
        ((100, 199), RangeRefusal(suggested=(100, 5000)), 149),
        # a suggestion starting elsewhere does not describe our request: halve
        ((100, 199), RangeRefusal(suggested=(0, 120)), 149),
        # a cap gives the next range
        ((100, 2099), RangeRefusal(max_blocks=800), 899),
        # a cap not smaller than the request explains nothing: halve
        ((100, 199), RangeRefusal(max_blocks=1000), 149),
        # nothing to go on: halve
        ((100, 2099), RangeRefusal(), 1099),
        ((7, 8), RangeRefusal(), 7),
        # a single block cannot shrink
        ((7, 7), RangeRefusal(), None),
    ],
)
def test_next_range_after_refusal(request_range, refusal, expected_to):
    assert next_to_block(*request_range, refusal) == expected_to
