"""Is the index ready to be queried? Per chain, from committed progress.

A chain with an end block is ready once its committed block reached it. A live chain is ready
when its committed block is within ``READY_LAG`` blocks of the head that the indexer in this
process last saw. Without an indexer in this process (``evmflow serve`` beside a separate
``evmflow run``) the head of a live chain is unknown: its readiness is unknown (None), and it
does not hold the whole index back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

READY_LAG = 3


@dataclass
class ChainStatus:
    chain_id: int
    block: int
    events: int
    end_block: int | None
    head: int | None
    ready: bool | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "chain_id": self.chain_id,
            "block": self.block,
            "events": self.events,
            "end_block": self.end_block,
            "head": self.head,
            "ready": self.ready,
        }


def chain_statuses(
    chains: list[Any], committed: dict[int, tuple[int, int]], indexer: Any = None
) -> list[ChainStatus]:
    """``chains``: the project's ChainConfigs; ``committed``: chain id -> (block, events) as
    stored in ``_evmflow_chains``."""
    out = []
    for chain in chains:
        block, events = committed.get(chain.id, (chain.start_block - 1, 0))
        state = indexer.chains.get(chain.id) if indexer is not None else None
        head = state.head if state is not None else None
        end_block = chain.end_block
        if end_block is not None:
            ready: bool | None = block >= end_block
        elif head is not None:
            ready = head - block <= READY_LAG
        else:
            ready = None if indexer is None else False
        out.append(ChainStatus(chain.id, block, events, end_block, head, ready))
    return out


def index_ready(statuses: list[ChainStatus], indexer: Any = None) -> tuple[bool, str]:
    """Whether the whole index is ready, and why not."""
    writer = getattr(indexer, "writer", None)
    if writer is not None and getattr(writer, "error", None) is not None:
        return False, f"the writer stopped: {writer.error}"
    waiting = [s for s in statuses if s.ready is False]
    if waiting:
        parts = []
        for s in waiting:
            target = s.end_block if s.end_block is not None else s.head
            parts.append(f"chain {s.chain_id} at block {s.block} of {target}")
        return False, "catching up: " + ", ".join(parts)
    return True, "ready"
