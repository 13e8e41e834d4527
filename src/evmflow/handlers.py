"""Handler registration: ``@ERC20.Transfer.handler`` and the loading of handler modules.

While a project's handler modules are imported, :mod:`evmflow.contracts` exposes one object per
contract of evmflow.yaml; each has one attribute per indexed event, whose ``handler`` decorator
registers an async function ``(event, context)``.
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import HandlerError

Handler = Callable[[Any, Any], Awaitable[None]]


def _caller() -> tuple[str | None, int | None]:
    frame = inspect.currentframe()
    outer = frame.f_back.f_back if frame and frame.f_back else None
    while outer is not None and outer.f_globals.get("__name__", "").startswith("evmflow."):
        outer = outer.f_back
    if outer is None:
        return None, None
    return outer.f_code.co_filename, outer.f_lineno


def _require_async(fn: Any, what: str) -> None:
    if not inspect.iscoroutinefunction(fn):
        file, line = _caller()
        raise HandlerError(
            f"{what} is not an async function",
            file=file,
            line=line,
            hint="declare it with 'async def'",
        )


class EventRef:
    """``ERC20.Transfer``: the target of a handler decorator."""

    def __init__(self, registry: Registry, contract: str, event: str) -> None:
        self._registry = registry
        self.contract = contract
        self.event = event

    def handler(self, fn: Handler) -> Handler:
        _require_async(
            fn, f"handler {getattr(fn, '__name__', fn)!r} for {self.contract}.{self.event}"
        )
        self._registry.handlers.setdefault((self.contract, self.event), []).append(fn)
        return fn

    def register(self, fn: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        """Register a function ``(event, registrar)`` that adds child contract addresses
        (``registrar.add(Pair, address)``) when this event is seen. It runs as the event is
        fetched, before any handler, and must not read entities."""
        self._registry.registrars.setdefault((self.contract, self.event), []).append(fn)
        return fn

    def __repr__(self) -> str:
        return f"<event {self.contract}.{self.event}>"


class ContractRef:
    """``ERC20``: gives the contract's indexed events as attributes."""

    def __init__(self, registry: Registry, name: str, events: list[str]) -> None:
        self._registry = registry
        self._name = name
        self._events = {e: EventRef(registry, name, e) for e in events}

    def __getattr__(self, event: str) -> EventRef:
        if event.startswith("__"):
            raise AttributeError(event)
        try:
            return self._events[event]
        except KeyError:
            file, line = _caller()
            raise HandlerError(
                f"contract {self._name} has no indexed event {event!r} "
                f"(indexed: {', '.join(self._events) or 'none'})",
                file=file,
                line=line,
                hint=f"add {event} to the 'events' of contract {self._name} in evmflow.yaml, "
                "or fix the name",
            ) from None


class BlockRef:
    """``from evmflow.blocks import Hourly``: ``@Hourly.handler`` runs every N blocks."""

    def __init__(self, registry: Registry, name: str) -> None:
        self._registry = registry
        self._name = name

    def handler(self, fn: Handler) -> Handler:
        _require_async(fn, f"block handler {getattr(fn, '__name__', fn)!r} for {self._name}")
        self._registry.block_handlers.setdefault(self._name, []).append(fn)
        return fn

    def __repr__(self) -> str:
        return f"<blocks {self._name}>"


@dataclass
class Registry:
    """The handlers of one project, by (contract, event)."""

    contracts: dict[str, ContractRef] = field(default_factory=dict)
    handlers: dict[tuple[str, str], list[Handler]] = field(default_factory=dict)
    registrars: dict[tuple[str, str], list[Callable[[Any, Any], Any]]] = field(default_factory=dict)
    blocks: dict[str, BlockRef] = field(default_factory=dict)
    block_handlers: dict[str, list[Handler]] = field(default_factory=dict)


_active: Registry | None = None


def _lookup(kind: str, module: str, table: str, name: str, hint: str) -> Any:
    if _active is None:
        raise HandlerError(
            f"evmflow.{module} is only usable while evmflow loads a project's handlers",
            hint="run your handlers with 'evmflow run' or evmflow.testing",
        )
    known = getattr(_active, table)
    try:
        return known[name]
    except KeyError:
        file, line = _caller()
        raise HandlerError(
            f"evmflow.yaml declares no {kind} {name!r} ({table}: {', '.join(known) or 'none'})",
            file=file,
            line=line,
            hint=hint,
        ) from None


def contract_ref(name: str) -> ContractRef:
    return _lookup(  # type: ignore[no-any-return]
        "contract",
        "contracts",
        "contracts",
        name,
        "add the contract to evmflow.yaml or fix the name",
    )


def block_ref(name: str) -> BlockRef:
    return _lookup(  # type: ignore[no-any-return]
        "block handler",
        "blocks",
        "blocks",
        name,
        "add it under 'blocks' in evmflow.yaml (name, every) or fix the name",
    )


def _import_file(path: Path, module_name: str) -> None:
    if path.is_dir():
        init = path / "__init__.py"
        if not init.exists():
            for child in sorted(path.glob("*.py")):
                _import_file(child, f"{module_name}.{child.stem}")
            return
        path = init
    spec = importlib.util.spec_from_file_location(
        module_name,
        path,
        submodule_search_locations=[str(path.parent)] if path.name == "__init__.py" else None,
    )
    if spec is None or spec.loader is None:
        raise HandlerError("cannot import this file", file=path, hint="give a .py file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except HandlerError:
        raise
    except SyntaxError as exc:
        raise HandlerError(
            f"syntax error: {exc.msg}",
            file=exc.filename or path,
            line=exc.lineno,
            hint="fix the Python syntax",
        ) from None
    except Exception as exc:
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == str(path)]
        line = frames[-1].lineno if frames else None
        raise HandlerError(
            f"importing the handlers raised {type(exc).__name__}: {exc}",
            file=path,
            line=line,
            hint="fix the error at module level of the handler file",
        ) from exc


def load_handlers(
    paths: list[Path], contracts: dict[str, list[str]], blocks: list[str] | None = None
) -> Registry:
    """Import the handler files with ``contracts`` (name -> event names) and the block
    handler names available."""
    global _active
    registry = Registry()
    registry.contracts = {n: ContractRef(registry, n, evs) for n, evs in contracts.items()}
    registry.blocks = {n: BlockRef(registry, n) for n in blocks or []}
    previous, _active = _active, registry
    try:
        for i, path in enumerate(paths):
            _import_file(Path(path), f"evmflow_project_handlers_{i}")
    finally:
        _active = previous
    return registry
