"""Chain reorganisations: noticing them in fetched pages, finding how deep they go, and the
plan that rewinds the index.

The problem: a chain may replace its last blocks. Everything the index learned from the
orphaned blocks must disappear as if never indexed, without reindexing and without losing the
work of other chains.

The choice: inside each chain's reorg window (the last ``max_reorg_depth`` blocks below its
head) the fetcher remembers every block hash it has seen and checks each new page against them:
a known block with another hash, or a block whose parent hash is not the hash we know for the
block below, means the chain forked. The hashes below the fork are fetched again; the highest
block whose hash still matches is the rollback target. Checkpoint ids order all changes of all
chains causally, so undoing every checkpoint after the target's undoes exactly what depended on
the orphaned blocks, on any chain.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from .errors import EvmflowError
from .sources.base import BlockHeader, Page
from .storage.base import ChainProgress, Checkpoint

log = logging.getLogger(__name__)


class ReorgTooDeep(EvmflowError):
    """No block of the reorg window matches the node any more: evmflow will not guess."""


@dataclass(slots=True)
class ReorgSignal:
    """Put in a chain's page buffer by its fetcher: the chain forked at ``block``."""

    block: int


def check_page(
    hashes: dict[int, str], page: Page, headers: dict[int, BlockHeader], floor: int
) -> int | None:
    """The first block of ``page`` that contradicts the known ``hashes``, or None.

    Headers that agree are added to ``hashes`` from ``floor`` up: the block at the floor is
    the oldest possible common ancestor, so a fork as deep as the window can still be undone.
    """
    for number in sorted(headers):
        header = headers[number]
        known = hashes.get(number)
        if known is not None and known != header.hash:
            return number
        below = hashes.get(number - 1)
        if below is not None and header.parent_hash is not None and header.parent_hash != below:
            return number
        if number >= floor:
            hashes[number] = header.hash
    return None


def forget_above(hashes: dict[int, str], block: int) -> None:
    for number in [n for n in hashes if n > block]:
        del hashes[number]


def forget_below(hashes: dict[int, str], floor: int) -> None:
    for number in [n for n in hashes if n < floor]:
        del hashes[number]


@dataclass
class RewindPlan:
    """What a rollback to ``target_block`` of one chain does to every chain."""

    target_checkpoint: int
    progress: dict[int, ChainProgress]  # the chains whose progress goes back


def plan_rewind(
    chain_id: int,
    target_block: int,
    checkpoints: list[Checkpoint],
    progress: dict[int, ChainProgress],
) -> RewindPlan:
    """Rewind everything after the last checkpoint at or below ``target_block`` of the forked
    chain. ``checkpoints`` are the committed window checkpoints of every chain."""
    after = [c for c in checkpoints if c.chain_id == chain_id and c.block > target_block]
    if after:
        target_checkpoint = min(c.id for c in after) - 1
    else:
        target_checkpoint = max((c.id for c in checkpoints), default=0)
    rewound: dict[int, ChainProgress] = {}
    for cid in progress:
        later = [c for c in checkpoints if c.chain_id == cid and c.id > target_checkpoint]
        if later:
            first = min(later, key=lambda c: c.id)
            rewound[cid] = ChainProgress(first.block - 1, first.events_before)
    own = rewound.get(chain_id, progress[chain_id])
    if own.block > target_block:
        rewound[chain_id] = ChainProgress(target_block, own.events)
    return RewindPlan(target_checkpoint, rewound)
