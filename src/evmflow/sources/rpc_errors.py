"""Reading the "ask for less" answers that nodes and providers give to ``eth_getLogs``.

No two providers word the refusal of a too-wide or too-full ``eth_getLogs`` the same way, and
most put the useful part (a block range that would work, or their block-range cap) only in the
message text. This module turns such an answer into a :class:`RangeRefusal` and picks the next
block range to ask for. It is pure (no I/O) so that each known wording has a table-driven test.

Three kinds of useful content are recognised, in this order of trust:

1. a suggested range (Alchemy ``[0x.., 0x..]``, reth ``retry with the range A-B``, Infura's
   ``data: {from, to}``): used as is, unless it is no smaller than the refused request (some
   nodes echo the request back), in which case the range is halved;
2. a block-range cap (``Max range: 800``, ``limited to 1000 blocks``, ``maximum 1024``): the
   next range is the cap, and the source never grows past it again;
3. nothing but the fact of the refusal (``more than 10000 results``): the range is halved.

Rate limits are worded with the same words ("too many", "limit", "exceeded") and must stay
transient errors: they are ruled out before anything else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_RATE_LIMIT_WORDS = (
    "rate limit",
    "rate-limit",
    "ratelimit",
    "too many requests",
    "request rate",
    "requests per second",
    "compute units",
    "capacity exceeded",
    "daily request count",
)

_RANGE_WORDS = (
    "block range",
    "blocks range",
    "range too",
    "range is too",
    "range exceeds",
    "max range",
    "maximum range",
    "range limit",
    "exceeds limit of",
    "limited to",
    "ranges over",
    "more than",
    "too many",
    "max results",
    "maximum results",
    "response size",
    "response is too big",
    "too big",
    "too large",
    "too wide",
    "narrow your filter",
    "query timeout",
    "query exceeds",
)

# "block range extends beyond current head block" (geth) is about the head, not the size.
_BEYOND_HEAD_WORDS = ("beyond current head", "beyond the current head", "after last accepted block")

_NUM = r"(\d[\d,_]*)"
_HEX_PAIR = re.compile(r"\[\s*(0x[0-9a-f]+)\s*,\s*(0x[0-9a-f]+)\s*\]")
_DEC_PAIR = re.compile(
    r"(?:retry with|try with|range should work:?|use)[^\d]{0,20}(\d+)\s*-\s*(\d+)"
)
_CAP_PATTERNS = tuple(
    re.compile(p)
    for p in (
        r"max(?:imum)?[ _]?(?:block[ _]?)?range(?: is)?[:=\s]+" + _NUM,
        r"exceeds? (?:the )?max(?:imum)? block range:?\s*" + _NUM,
        r"limited to (?:a )?" + _NUM + r"(?:\s*-?\s*blocks?)? range",
        r"limited to " + _NUM + r" blocks?",
        r"ranges? over " + _NUM + r" blocks",
        r"range (?:\d+ )?exceeds limit of " + _NUM,
        r"bigger than (?:the )?range limit " + _NUM,
        r"\(max(?:imum)?:? " + _NUM + r"\)",
        r"up to a " + _NUM + r" block range",
        r"block range exceeds server limit, narrow your filter: " + _NUM,
        r"block range (?:is )?(?:too large|too wide|exceeded)[^\d]{0,20}" + _NUM,
    )
)
# Alchemy's long message explains its 2K cap *and* gives a range: only the range counts there.
_EXPLANATION_ONLY = re.compile(r"you can make eth_getlogs requests with up to a \S+ block range")


@dataclass(frozen=True, slots=True)
class RangeRefusal:
    """An ``eth_getLogs`` answer that means "ask for fewer blocks or fewer logs"."""

    suggested: tuple[int, int] | None = None
    """A block range the provider says would work, inclusive."""
    max_blocks: int | None = None
    """The provider's cap on the number of blocks in one request."""
    beyond_head: bool = False
    """The request reached past the node's head: wait, do not shrink."""


def _to_int(text: str) -> int:
    return int(text.replace(",", "").replace("_", ""))


def _flatten(data: Any) -> str:
    if data is None:
        return ""
    if isinstance(data, dict):
        return " ".join(_flatten(v) for v in data.values())
    if isinstance(data, list):
        return " ".join(_flatten(v) for v in data)
    return str(data)


def _range_from_data(data: Any) -> tuple[int, int] | None:
    # Infura's -32005 answer carries {"from": "0x..", "to": "0x.."} beside the message.
    if not isinstance(data, dict):
        return None
    start, end = data.get("from"), data.get("to")
    if not isinstance(start, str) or not isinstance(end, str):
        return None
    try:
        return int(start, 16), int(end, 16)
    except ValueError:
        return None


def classify_getlogs_error(code: int | None, message: str, data: Any = None) -> RangeRefusal | None:
    """Read a JSON-RPC error of ``eth_getLogs``; ``None`` when it is not about the request size.

    ``None`` means the caller should treat the error as any other (retry with backoff, then
    fail).
    """
    text = f"{message} {_flatten(data)}".lower()
    if any(word in text for word in _RATE_LIMIT_WORDS):
        return None
    if any(word in text for word in _BEYOND_HEAD_WORDS):
        return RangeRefusal(beyond_head=True)
    if code == -32005 and "limit" in text and "result" not in text and "range" not in text:
        # -32005 is also the EIP-1474 "limit exceeded" code of request-rate limits.
        return None
    if not any(word in text for word in _RANGE_WORDS):
        return None

    suggested = _range_from_data(data)
    if suggested is None:
        pair = _HEX_PAIR.search(text)
        if pair:
            suggested = int(pair.group(1), 16), int(pair.group(2), 16)
    if suggested is None:
        pair = _DEC_PAIR.search(text)
        if pair:
            suggested = int(pair.group(1)), int(pair.group(2))

    max_blocks = None
    if not _EXPLANATION_ONLY.search(text):
        for pattern in _CAP_PATTERNS:
            found = pattern.search(text)
            if found:
                max_blocks = _to_int(found.group(1))
                break
    if max_blocks is not None and max_blocks < 1:
        max_blocks = None
    return RangeRefusal(suggested=suggested, max_blocks=max_blocks)


def next_to_block(from_block: int, to_block: int, refusal: RangeRefusal) -> int | None:
    """The end of the next, smaller request starting at ``from_block``.

    ``None`` when the refused request was a single block: nothing smaller exists.
    """
    if to_block <= from_block:
        return None
    halved = from_block + (to_block - from_block + 1) // 2 - 1
    candidates = []

    if refusal.suggested is not None:
        start, end = refusal.suggested
        # A suggestion is used only when it starts where we start and is truly smaller;
        # some nodes echo the refused range back, and retrying it would loop forever.
        if start == from_block and from_block <= end < to_block:
            candidates.append(end)
    if refusal.max_blocks is not None:
        capped = from_block + refusal.max_blocks - 1
        if capped < to_block:
            candidates.append(capped)

    if candidates:
        return min(candidates)
    return halved
