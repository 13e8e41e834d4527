"""Loading a project: config, schema, entity classes, handlers and event decoders."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from . import entities as entities_module
from .config import ProjectConfig, load_config
from .decode import EventDecoder
from .entities import Entity, make_entity_classes
from .errors import HandlerError
from .handlers import Handler, Registry, load_handlers
from .schema import SchemaSpec, load_schema
from .sources.base import LogFilter

log = logging.getLogger(__name__)

# Past this many addresses, a contract's logs are fetched by topic and matched locally.
ADDRESS_LIST_LIMIT = 1000


@dataclass
class EventBinding:
    """One (contract, event) the project indexes, with its decoder and handlers."""

    contract: str
    event: str
    decoder: EventDecoder
    handlers: list[Handler]
    addresses: list[str]  # empty: any address
    chains: list[int]
    start_block: int | None
    registered: bool = False  # addresses come from registration handlers
    registrars: list = field(default_factory=list)
    topics: tuple = ()  # allowed values of topics 1..3 (None: any), from 'where'


@dataclass
class BlockBinding:
    """A block handler: runs at start, start + every, ... on each of its chains."""

    name: str
    every: int
    chains: list[int]
    start_block: int | None
    end_block: int | None
    handlers: list[Handler]

    def blocks_in(self, chain_start: int, first: int, last: int) -> range:
        start = self.start_block if self.start_block is not None else chain_start
        if self.end_block is not None:
            last = min(last, self.end_block)
        first = max(first, start)
        offset = (first - start) % self.every
        if offset:
            first += self.every - offset
        return range(first, last + 1, self.every)


@dataclass
class Project:
    config: ProjectConfig
    schema: SchemaSpec
    classes: dict[str, type[Entity]]
    registry: Registry
    bindings: list[EventBinding] = field(default_factory=list)
    block_bindings: list[BlockBinding] = field(default_factory=list)

    def filters(self, chain_id: int) -> list[LogFilter]:
        """What to fetch on a chain: one filter per contract."""
        by_contract: dict[str, LogFilter] = {}
        own: list[LogFilter] = []
        for b in self.bindings:
            if chain_id not in b.chains:
                continue
            addresses = list(b.addresses) or None
            if addresses is not None and len(addresses) > ADDRESS_LIST_LIMIT:
                # Nodes refuse or crawl on long address lists: fetch by topic and let the
                # routes (which match exact addresses) drop the other contracts' logs.
                addresses = None
            if any(t is not None for t in b.topics):
                # An event filtered on its indexed parameters gets a filter of its own.
                own.append(LogFilter(addresses, [b.decoder.event.topic0], b.topics))
                continue
            f = by_contract.get(b.contract)
            if f is None:
                # Registered contracts are fetched by topic and matched against the
                # registered addresses locally: no refetch when an address is added, and no
                # limit on how many there are.
                f = by_contract[b.contract] = LogFilter(addresses, [])
            if b.decoder.event.topic0 not in f.topic0s:
                f.topic0s.append(b.decoder.event.topic0)
        return list(by_contract.values()) + own

    def routes(self, chain_id: int) -> tuple[dict, dict, dict]:
        """Lookup tables for a log: (topic0, address) -> bindings, topic0 -> bindings of
        contracts that take any address, and topic0 -> bindings of registered contracts."""
        by_address: dict[tuple[str, str], list[EventBinding]] = {}
        wildcard: dict[str, list[EventBinding]] = {}
        registered: dict[str, list[EventBinding]] = {}
        for b in self.bindings:
            if chain_id not in b.chains:
                continue
            topic0 = b.decoder.event.topic0
            if b.registered:
                registered.setdefault(topic0, []).append(b)
            elif b.addresses:
                for address in b.addresses:
                    by_address.setdefault((topic0, address), []).append(b)
            else:
                wildcard.setdefault(topic0, []).append(b)
        return by_address, wildcard, registered


def load_project(path: str | Path) -> Project:
    config = load_config(path)
    schema = load_schema(config.schema_path)
    classes = make_entity_classes(schema)
    entities_module._install(classes)
    contracts = {c.name: [e.name for e in c.event_abis] for c in config.contracts}
    registry = load_handlers(config.handlers, contracts, [b.name for b in config.blocks])
    project = Project(config, schema, classes, registry)
    for block in config.blocks:
        handlers = registry.block_handlers.get(block.name, [])
        if not handlers:
            log.warning("no handler registered for block handler %s: it does nothing", block.name)
        project.block_bindings.append(
            BlockBinding(
                block.name,
                block.every,
                list(block.chains),
                block.start_block,
                block.end_block,
                handlers,
            )
        )
    for contract in config.contracts:
        for event in contract.event_abis:
            settings = contract.event_settings(event)
            handlers = registry.handlers.get((contract.name, event.name), [])
            registrars = registry.registrars.get((contract.name, event.name), [])
            if not handlers and not registrars:
                log.warning(
                    "no handler registered for %s.%s: its events are fetched but ignored",
                    contract.name,
                    event.name,
                )
            project.bindings.append(
                EventBinding(
                    contract.name,
                    event.name,
                    EventDecoder(event),
                    handlers,
                    list(contract.addresses),
                    list(contract.chains),
                    settings.start_block,
                    contract.registered,
                    registrars,
                    settings.topics,
                )
            )
    known = {(b.contract, b.event) for b in project.bindings}
    for key in registry.handlers:
        if key not in known:  # pragma: no cover - ContractRef refuses unknown events earlier
            raise HandlerError(f"handler for unknown event {key[0]}.{key[1]}")
    return project
