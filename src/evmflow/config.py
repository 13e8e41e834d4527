"""evmflow.yaml: reading and checking a project's configuration.

Loading happens in three steps, each with its own kind of error:

1. YAML is read into nodes that remember their line, then into plain values. Hex scalars such
   as ``0xdac1...`` stay text: YAML 1.1 would read an unquoted address as an integer and lose
   its leading zeros.
2. pydantic checks the shape (keys, types, ranges). Its errors are translated into one sentence
   a person can act on, placed by walking the error's key path through the YAML nodes.
3. What needs the file system or more than one key is resolved by hand: paths become absolute,
   ABI files are read, events are matched, chain ids are cross-checked.

Every fault raises :class:`~evmflow.errors.ConfigError` naming the file, the line, the key path
(``chains[0].rpc.urls``) and a fix. Only the first fault (the one highest in the file) is
reported, so the user fixes the file from top to bottom.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import keyword
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import pydantic
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)

from .abi import EventAbi, load_abi_file, parse_event_signature
from .errors import AbiError, ConfigError

CONFIG_FILE = "evmflow.yaml"

Loc = tuple[str | int, ...]


class _Fault(ValueError):
    """A check inside a model failed; carries the fix and, optionally, the key it is about.

    pydantic wraps it into its own error with the key path; :func:`_describe` unwraps it.
    """

    def __init__(self, message: str, hint: str | None = None, key: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.key = key


# --- value types ------------------------------------------------------------------------------

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _interpolate_env(value: str) -> str:
    """Replace every ``${VAR}`` by the environment variable's value."""

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise _Fault(
                f"environment variable {name} is not set (used as ${{{name}}})",
                hint=f"export {name}=... before running evmflow, or write the value here",
            )
        return os.environ[name]

    if "${" in _ENV_REF.sub("", value):
        raise _Fault(
            f"cannot read the variable reference in {value!r}",
            hint="write environment variables as ${NAME}: letters, digits and '_'",
        )
    result = _ENV_REF.sub(substitute, value)
    return result


def _one_or_many(value: Any) -> Any:
    """Let a single value stand for a list of one."""
    if isinstance(value, str | int | float):
        return [value]
    return value


def _none_is_empty(value: Any) -> Any:
    return [] if value is None else _one_or_many(value)


def _hex_block(value: Any) -> Any:
    """Accept block numbers written in hex (``0x10``), as JSON-RPC prints them."""
    if isinstance(value, bool):
        # YAML reads yes/no/true/false as booleans, and pydantic would take true as 1.
        raise ValueError(f"expected a whole number, got {str(value).lower()}")
    if isinstance(value, str) and value.lower().startswith("0x"):
        try:
            return int(value, 16)
        except ValueError:
            return value
    return value


_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")


def _address(value: str) -> str:
    if not _ADDRESS.fullmatch(value):
        raise _Fault(
            f"{value!r} is not a contract address",
            hint="write 0x followed by 40 hex digits, e.g. "
            "0xdac17f958d2ee523a2206206994597c13d831ec7",
        )
    return value.lower()


def _http_url(url: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise _Fault(
            f"{url!r} is not an HTTP URL",
            hint="write the node's JSON-RPC URL starting with http:// or https://",
        )
    return url


# ${VAR} is replaced in every string before validation (_interpolate_tree).
EnvStr = str
RpcUrl = Annotated[EnvStr, AfterValidator(_http_url)]
BlockNumber = Annotated[int, BeforeValidator(_hex_block), Field(ge=0)]
Address = Annotated[str, AfterValidator(_address)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- models -----------------------------------------------------------------------------------


class EngineConfig(_Model):
    """How the engine batches and commits."""

    batch_size: int = Field(5000, gt=0)
    """Events per batch."""
    max_uncommitted: int = Field(250_000, gt=0)
    """Entity changes held in memory before processing waits for the writer."""
    cache_limit: int = Field(250_000, gt=0)
    """Committed entities kept in memory for reads; past it they are dropped at the next
    batch boundary (the database has them)."""
    pipeline: bool = True
    """False: wait for every commit before processing the next batch."""
    preload: Literal["always", "auto"] = "always"
    """always: every batch is preloaded whole before its handlers run. auto: a batch's preload
    pass starts at its first read that memory cannot answer, over the events from there on; a
    batch memory answers whole runs its handlers once."""
    multichain: Literal["unordered", "ordered"] = "unordered"
    """ordered: events of all chains in one order (block timestamp, chain id, block, log
    index); unordered: each chain in its own order, chains interleaved by batch."""


class RpcSourceConfig(_Model):
    """A JSON-RPC node (or several: later URLs are fallbacks)."""

    urls: Annotated[list[RpcUrl], BeforeValidator(_one_or_many), Field(min_length=1)]
    request_timeout: float = Field(30.0, gt=0)
    max_block_range: int = Field(2000, gt=0)
    concurrency: int = Field(4, gt=0)
    poll_interval: float = Field(1.0, gt=0)
    block_lag: int = Field(0, ge=0)
    headers: dict[str, EnvStr] = Field(default_factory=dict)


_ARCHIVE_LOGS = ("logs.jsonl", "logs.jsonl.gz")
_ARCHIVE_BLOCKS = ("blocks.jsonl", "blocks.jsonl.gz")


class ArchiveSourceConfig(_Model):
    """Local JSONL files of logs (and block headers), in the shape an RPC node returns.

    ``path`` is either a directory holding ``logs.jsonl[.gz]`` (and ``blocks.jsonl[.gz]``), or
    a prefix ``NAME`` of ``NAME.logs.jsonl[.gz]`` and ``NAME.blocks.jsonl[.gz]``.
    """

    path: Path
    reader: Literal["auto", "process", "thread"] = "auto"
    """Where the files are parsed: a child process keeps the parsing off the indexer's
    interpreter lock; a thread starts faster. ``auto`` takes a process for logs files of a
    mebibyte and more."""

    def _candidates(self, names: tuple[str, ...]) -> list[Path]:
        if self.path.is_dir():
            return [self.path / name for name in names]
        return [self.path.with_name(f"{self.path.name}.{name}") for name in names]

    def logs_file(self) -> Path:
        """The logs file; raises ConfigError when there is none."""
        for candidate in self._candidates(_ARCHIVE_LOGS):
            if candidate.is_file():
                return candidate
        tried = ", ".join(str(c) for c in self._candidates(_ARCHIVE_LOGS))
        raise ConfigError(
            f"archive has no logs file (looked for {tried})",
            hint="point 'path' at a directory holding logs.jsonl[.gz] or at the NAME of "
            "NAME.logs.jsonl[.gz]",
        )

    def blocks_file(self) -> Path | None:
        """The block headers file, or None when the archive has only logs."""
        for candidate in self._candidates(_ARCHIVE_BLOCKS):
            if candidate.is_file():
                return candidate
        return None


class ChainConfig(_Model):
    """One chain to index and where its logs come from."""

    id: Annotated[int, BeforeValidator(_hex_block), Field(gt=0)]
    start_block: BlockNumber = 0
    end_block: BlockNumber | None = None
    """Inclusive; None follows the head forever."""
    max_reorg_depth: int = Field(200, ge=0)
    rollback_on_reorg: bool = True
    rpc: RpcSourceConfig | None = None
    archive: ArchiveSourceConfig | None = None

    @model_validator(mode="after")
    def _check(self) -> ChainConfig:
        # Both: the archive up to its last block, then the node (sources/handover.py).
        if self.rpc is None and self.archive is None:
            raise _Fault(
                f"chain {self.id} has neither 'rpc' nor 'archive'",
                hint="give it a source: rpc: {urls: [...]}, archive: {path: ...}, or both (the "
                "archive first, then the node from the block after the archive's last)",
            )
        if self.end_block is not None and self.end_block < self.start_block:
            raise _Fault(
                f"end_block {self.end_block} is below start_block {self.start_block}",
                hint="end_block is the last block to index (inclusive); make it >= start_block",
                key="end_block",
            )
        return self


class EventOptions(_Model):
    """An event listed with options: ``{event: Transfer, start_block: N, where: {to: 0x..}}``."""

    event: str
    start_block: BlockNumber | None = None
    where: dict[str, Any] = Field(default_factory=dict)
    """Indexed parameter -> value or list of values: only matching logs are fetched."""


@dataclass(frozen=True)
class EventSettings:
    """The resolved options of one indexed event."""

    start_block: int | None
    topics: tuple[frozenset[str] | None, ...]  # allowed values of topics 1..3; None: any


class ContractConfig(_Model):
    """A contract (or a set of them sharing one ABI) whose events are indexed."""

    name: str
    abi: Path
    addresses: Annotated[list[Address], BeforeValidator(_none_is_empty)] = Field(
        default_factory=list, alias="address"
    )
    """Lowercase; empty means logs of any address with matching events."""
    events: Annotated[list[str | EventOptions], BeforeValidator(_one_or_many), Field(min_length=1)]
    """As written in evmflow.yaml; see ``event_abis`` for the resolved events."""
    chains: Annotated[list[Annotated[int, BeforeValidator(_hex_block)]], Field(min_length=1)] = (
        Field(default_factory=list)
    )
    """Filled with every chain id when evmflow.yaml leaves it out."""
    start_block: BlockNumber | None = None
    registered: bool = False
    """Addresses come from registration handlers (a factory's children), not from the config."""

    _event_abis: list[EventAbi] = PrivateAttr(default_factory=list)
    _event_settings: dict[str, EventSettings] = PrivateAttr(default_factory=dict)

    def event_settings(self, event: EventAbi) -> EventSettings:
        """Start block and indexed-parameter filter of an event (by its signature)."""
        return self._event_settings.get(event.signature, EventSettings(self.start_block, ()))

    @property
    def event_abis(self) -> list[EventAbi]:
        """The events of ``events``, as found in the ABI, in the same order."""
        return self._event_abis

    @field_validator("name")
    @classmethod
    def _identifier(cls, name: str) -> str:
        if not name.isidentifier() or keyword.iskeyword(name):
            raise _Fault(
                f"contract name {name!r} is not a Python identifier",
                hint="use letters, digits and '_', not starting with a digit (e.g. ERC20, "
                "UniswapV2Pair): handlers refer to it by this name",
            )
        return name

    @field_validator("addresses")
    @classmethod
    def _unique_addresses(cls, addresses: list[str]) -> list[str]:
        return list(dict.fromkeys(addresses))

    @model_validator(mode="after")
    def _registered_has_no_addresses(self) -> ContractConfig:
        if self.registered and self.addresses:
            raise _Fault(
                f"contract {self.name} is 'registered' and also lists addresses",
                hint="a registered contract takes its addresses from registration handlers: "
                "remove 'address', or remove 'registered: true'",
            )
        return self


class BlockHandlerConfig(_Model):
    """Handlers that run every ``every`` blocks, not on events."""

    name: str
    every: int = Field(gt=0)
    chains: Annotated[list[Annotated[int, BeforeValidator(_hex_block)]], Field(min_length=1)] = (
        Field(default_factory=list)
    )
    """Filled with every chain id when evmflow.yaml leaves it out."""
    start_block: BlockNumber | None = None
    """Default: the chain's start block. Runs at start_block, start_block + every, ..."""
    end_block: BlockNumber | None = None

    @field_validator("name")
    @classmethod
    def _identifier(cls, name: str) -> str:
        if not name.isidentifier() or keyword.iskeyword(name):
            raise _Fault(
                f"block handler name {name!r} is not a Python identifier",
                hint="use letters, digits and '_': handlers refer to it by this name",
            )
        return name


_NAME = re.compile(r"[A-Za-z0-9_-]+")
_DATABASE_SCHEMES = ("sqlite://", "postgresql://", "postgres://")


class ProjectConfig(_Model):
    """A whole evmflow.yaml, with paths made absolute and events resolved."""

    name: str
    schema_path: Path = Field(Path("schema.graphql"), alias="schema")
    handlers: Annotated[list[Path], BeforeValidator(_none_is_empty)] = Field(default_factory=list)
    """Handler files (.py) and package directories; see :func:`load_config` for the default."""
    database: EnvStr | None = None
    """A URL: ``sqlite:///path`` or ``postgresql://...``; None lets the runner choose."""
    engine: EngineConfig = Field(default_factory=lambda: EngineConfig.model_validate({}))
    chains: Annotated[list[ChainConfig], Field(min_length=1)]
    contracts: Annotated[list[ContractConfig], Field(min_length=1)]
    blocks: list[BlockHandlerConfig] = Field(default_factory=list)

    _root: Path = PrivateAttr(default=Path("."))
    _path: Path = PrivateAttr(default=Path(CONFIG_FILE))

    @property
    def root(self) -> Path:
        """The project directory."""
        return self._root

    @property
    def path(self) -> Path:
        """The evmflow.yaml file."""
        return self._path

    @field_validator("name")
    @classmethod
    def _simple_name(cls, name: str) -> str:
        if not _NAME.fullmatch(name):
            raise _Fault(
                f"project name {name!r} may only hold letters, digits, '-' and '_'",
                hint="e.g. name: erc20-mainnet",
            )
        return name

    @field_validator("database")
    @classmethod
    def _database_url(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(_DATABASE_SCHEMES):
            raise _Fault(
                f"{url!r} is not a database URL evmflow knows",
                hint="use sqlite:///path/to/file.db or postgresql://user:password@host/dbname",
            )
        return url

    def chain(self, chain_id: int) -> ChainConfig:
        for chain in self.chains:
            if chain.id == chain_id:
                return chain
        raise KeyError(chain_id)

    def fingerprint(self) -> str:
        """A stable hash of what decides the stored data (of ``identity``)."""
        return hashlib.sha256(self.identity().encode()).hexdigest()

    def identity(self) -> str:
        """What decides the stored data, as JSON text.

        Chain ids and start blocks, and per contract its name, addresses, events (with their
        indexed inputs, which decide decoding), chains and start block. End blocks, URLs and
        engine settings change how the data is fetched, not what is stored, so they are left
        out: a resume after changing them is safe.
        """
        described = {
            "version": 1,
            "chains": sorted([c.id, c.start_block] for c in self.chains),
            "contracts": sorted(
                (
                    {
                        "name": c.name,
                        "addresses": sorted(c.addresses),
                        "events": sorted(_event_identity(e) for e in c.event_abis),
                        "chains": sorted(c.chains),
                        "start_block": c.start_block,
                        "registered": c.registered,
                        "options": sorted(
                            [sig, o.start_block, [sorted(t) if t else None for t in o.topics]]
                            for sig, o in c._event_settings.items()
                        ),
                    }
                    for c in self.contracts
                ),
                key=lambda c: str(c["name"]),
            ),
            "blocks": sorted(
                [b.name, b.every, sorted(b.chains), b.start_block, b.end_block] for b in self.blocks
            ),
        }
        return json.dumps(described, sort_keys=True, separators=(",", ":"))


def _event_identity(event: EventAbi) -> str:
    inputs = ",".join(p.canonical_type + (" indexed" if p.indexed else "") for p in event.inputs)
    return f"{event.name}({inputs})" + (" anonymous" if event.anonymous else "")


# --- YAML with line numbers -------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """SafeLoader that keeps hex scalars as text (addresses must not become integers)."""


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
    if node.value.lstrip("+-").lower().startswith("0x"):
        return node.value
    return yaml.SafeLoader.construct_yaml_int(loader, node)


_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def _where(loc: Loc) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


class _Document:
    """The YAML nodes of evmflow.yaml, to find the line of a key path."""

    def __init__(self, file: Path, root: yaml.Node | None) -> None:
        self.file = file
        self.root = root

    def line(self, loc: Loc) -> int | None:
        """Line of the deepest node along ``loc`` (1-based); keys give their own line."""
        node = self.root
        if node is None:
            return None
        line = None
        for part in loc:
            if isinstance(node, yaml.MappingNode):
                for key_node, value_node in node.value:
                    if key_node.value == str(part):
                        line, node = key_node.start_mark.line + 1, value_node
                        break
                else:
                    return line if line is not None else node.start_mark.line + 1
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
                if part >= len(node.value):
                    return line
                node = node.value[part]
                line = node.start_mark.line + 1
            else:
                return line
        return line

    def error(self, loc: Loc, message: str, hint: str | None = None) -> ConfigError:
        return ConfigError(
            message, file=self.file, line=self.line(loc), where=_where(loc) or None, hint=hint
        )


def _read_yaml(file: Path) -> tuple[Any, _Document]:
    try:
        text = file.read_text()
    except OSError as exc:
        raise ConfigError(
            f"cannot read the config file: {exc.strerror}",
            file=file,
            hint="run evmflow in the project directory or pass the path to evmflow.yaml",
        ) from None
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        document = _Document(file, node)
        if node is not None:
            _check_duplicate_keys(node, (), document)
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "cannot be read"
        raise ConfigError(
            f"invalid YAML: {problem}",
            file=file,
            line=mark.line + 1 if mark else None,
            hint="fix the YAML syntax (indentation, ':' after keys, closing brackets/quotes)",
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", file=file, hint="fix the YAML syntax") from None
    finally:
        loader.dispose()
    return data, document


def _check_duplicate_keys(node: yaml.Node, loc: Loc, document: _Document) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key in seen:
                raise ConfigError(
                    f"key '{key}' appears twice (first on line {seen[key]})",
                    file=document.file,
                    line=key_node.start_mark.line + 1,
                    where=_where(loc) or None,
                    hint="keep one of them",
                )
            seen[key] = key_node.start_mark.line + 1
            _check_duplicate_keys(value_node, (*loc, key), document)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _check_duplicate_keys(item, (*loc, index), document)


# --- pydantic errors in plain words -----------------------------------------------------------


def _show(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return repr(value)
    return str(value)


def _model_at(loc: Loc) -> type[BaseModel] | None:
    """The model class that validates the mapping at ``loc`` (list indexes skipped)."""
    model: Any = ProjectConfig
    for part in loc:
        if isinstance(part, int):
            continue
        fields = {f.alias or name: f for name, f in model.model_fields.items()}
        if part not in fields:
            return None
        annotation = fields[part].annotation
        model = _unwrap_model(annotation)
        if model is None:
            return None
    return model


def _unwrap_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) is Annotated:
        return _unwrap_model(get_args(annotation)[0])
    for arg in get_args(annotation):
        found = _unwrap_model(arg)
        if found is not None:
            return found
    return None


def _allowed_keys(model: type[BaseModel]) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items()]


def _describe(error: Any) -> tuple[Loc, str, str | None]:
    """One pydantic error as (key path, message, fix)."""
    loc, message, hint = _explain(error)
    if hint is None and error.get("input", ...) is None:
        hint = "give this key a value, or leave the key out if it is optional"
    return loc, message, hint


def _explain(error: Any) -> tuple[Loc, str, str | None]:
    loc: Loc = tuple(error["loc"])
    kind = error["type"]
    value = error.get("input")
    ctx = error.get("ctx") or {}
    got = f", got {_show(value)}"

    hint: str | None
    if kind == "missing":
        key = str(loc[-1])
        return loc[:-1], f"missing required key '{key}'", f"add '{key}:' here"
    if kind == "extra_forbidden":
        key = str(loc[-1])
        model = _model_at(loc[:-1])
        allowed = _allowed_keys(model) if model else []
        hint = ""
        close = difflib.get_close_matches(key, allowed, n=1)
        if close:
            hint = f"did you mean '{close[0]}'? "
        hint += "allowed keys here: " + ", ".join(allowed)
        # Placed on the unknown key's own line, named by the mapping that holds it.
        return loc, f"unknown key '{key}'", hint
    if kind in ("value_error", "assertion_error"):
        cause = ctx.get("error")
        if isinstance(cause, _Fault):
            return (*loc, cause.key) if cause.key else loc, cause.message, cause.hint
        return loc, str(cause or error["msg"]), None
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return loc, f"expected a whole number{got}", None
    if kind in ("float_type", "float_parsing"):
        return loc, f"expected a number{got}", None
    if kind in ("bool_type", "bool_parsing"):
        return loc, f"expected true or false{got}", None
    if kind == "string_type":
        hint = "put the value in quotes" if isinstance(value, int | float | bool) else None
        return loc, f"expected text{got}", hint
    if kind == "path_type":
        return loc, f"expected a file path{got}", None
    if kind == "list_type":
        return loc, f"expected a list{got}", "write [a, b] or one '- item' per line"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return loc, f"expected a mapping of 'key: value' lines{got}", None
    if kind == "greater_than":
        return loc, f"must be greater than {ctx.get('gt')}{got}", None
    if kind == "greater_than_equal":
        return loc, f"must be {ctx.get('ge')} or more{got}", None
    if kind == "literal_error":
        expected = str(ctx.get("expected", "")).replace("'", "")
        close = difflib.get_close_matches(str(value), expected.replace(" or ", ", ").split(", "))
        hint = f"did you mean '{close[0]}'? " if close else ""
        return loc, f"must be one of {expected}{got}", hint + f"write one of: {expected}"
    if kind == "too_short":
        return loc, "must not be empty", "list at least one item, or leave the key out if optional"
    return loc, f"{error['msg']}{got}", None


def _interpolate_tree(value: Any, loc: Loc, document: _Document) -> Any:
    """Every string of the parsed file with its ``${VAR}`` replaced (before validation, so a
    number or a path may come from the environment too)."""
    if isinstance(value, str):
        if "${" not in value:
            return value
        try:
            return _interpolate_env(value)
        except _Fault as fault:
            raise document.error(loc, fault.message, fault.hint) from None
    if isinstance(value, dict):
        return {k: _interpolate_tree(v, (*loc, k), document) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate_tree(v, (*loc, i), document) for i, v in enumerate(value)]
    return value


def _validation_failure(exc: pydantic.ValidationError, document: _Document) -> ConfigError:
    described = [_describe(e) for e in exc.errors()]
    # The fault highest in the file first; pydantic's own order is by model field.
    described.sort(key=lambda d: document.line(d[0]) or 0)
    loc, message, hint = described[0]
    error = document.error(loc, message, hint)
    if message.startswith("unknown key"):
        error = ConfigError(
            message, file=document.file, line=error.line, where=_where(loc[:-1]) or None, hint=hint
        )
    return error


# --- resolving paths, files and events --------------------------------------------------------


def _find_config_file(path: Path) -> Path:
    if path.is_dir():
        for name in (CONFIG_FILE, "evmflow.yml"):
            if (path / name).is_file():
                return path / name
        raise ConfigError(
            f"no {CONFIG_FILE} in this directory",
            file=path,
            hint="run 'evmflow init' to start a project, or pass the path to the config file",
        )
    if not path.exists():
        raise ConfigError("config file not found", file=path, hint="check the path to evmflow.yaml")
    return path


def _resolve_paths(config: ProjectConfig, data: dict, document: _Document) -> None:
    root = config.root
    config.schema_path = (root / config.schema_path).resolve()
    if not config.schema_path.is_file():
        where: Loc = ("schema",) if "schema" in data else ()
        raise document.error(
            where,
            f"schema file not found: {config.schema_path}",
            hint="create schema.graphql with your entities, or set 'schema:' to its path",
        )

    if "handlers" in data and data["handlers"] is not None:
        handlers = []
        for index, handler in enumerate(config.handlers):
            absolute = (root / handler).resolve()
            loc: Loc = ("handlers", index) if isinstance(data["handlers"], list) else ("handlers",)
            if not absolute.exists():
                raise document.error(
                    loc,
                    f"handler file not found: {absolute}",
                    hint="create it, or fix the path (relative to the project directory)",
                )
            if absolute.is_file() and absolute.suffix != ".py":
                raise document.error(
                    loc,
                    f"handler {absolute.name} is not a Python file",
                    hint="list .py files or directories of them",
                )
            handlers.append(absolute)
        config.handlers = handlers
    elif (root / "handlers.py").is_file():
        config.handlers = [(root / "handlers.py").resolve()]
    elif (root / "handlers").is_dir():
        config.handlers = [(root / "handlers").resolve()]
    else:
        config.handlers = []


def _resolve_chains(config: ProjectConfig, document: _Document) -> None:
    first_index: dict[int, int] = {}
    for index, chain in enumerate(config.chains):
        if chain.id in first_index:
            raise document.error(
                ("chains", index, "id"),
                f"chain id {chain.id} is declared twice (also chains[{first_index[chain.id]}])",
                hint="declare each chain once; one chain may serve many contracts",
            )
        first_index[chain.id] = index

        if chain.archive is not None:
            chain.archive.path = (config.root / chain.archive.path).resolve()
            try:
                chain.archive.logs_file()
            except ConfigError as exc:
                raise document.error(
                    ("chains", index, "archive", "path"), exc.message, exc.hint
                ) from None


def _resolve_blocks(config: ProjectConfig, document: _Document) -> None:
    chain_ids = [c.id for c in config.chains]
    names = {c.name for c in config.contracts}
    seen: set[str] = set()
    for index, block in enumerate(config.blocks):
        at: Loc = ("blocks", index)
        if block.name in seen or block.name in names:
            raise document.error(
                (*at, "name"),
                f"the name {block.name!r} is already used by another contract or block handler",
                hint="give each block handler a name of its own",
            )
        seen.add(block.name)
        for i, chain_id in enumerate(block.chains):
            if chain_id not in chain_ids:
                raise document.error(
                    (*at, "chains", i),
                    f"chain {chain_id} is not declared under 'chains'",
                    hint=f"declared chains: {', '.join(map(str, chain_ids))}",
                )
        if not block.chains:
            block.chains = list(chain_ids)


def _resolve_contracts(config: ProjectConfig, document: _Document) -> None:
    chain_ids = [c.id for c in config.chains]
    first_index: dict[str, int] = {}
    for index, contract in enumerate(config.contracts):
        at: Loc = ("contracts", index)
        if contract.name in first_index:
            raise document.error(
                (*at, "name"),
                f"contract name {contract.name!r} is used twice "
                f"(also contracts[{first_index[contract.name]}])",
                hint="give each contract its own name; list several addresses under one "
                "contract with 'address: [0x..., 0x...]'",
            )
        first_index[contract.name] = index

        contract.abi = (config.root / contract.abi).resolve()
        if not contract.abi.is_file():
            raise document.error(
                (*at, "abi"),
                f"ABI file not found: {contract.abi}",
                hint="save the contract's ABI JSON there, or fix the path (relative to the "
                "project directory)",
            )
        try:
            abi_events = load_abi_file(contract.abi)
        except AbiError as exc:
            raise ConfigError(
                exc.message, file=exc.file, line=exc.line, where=_where((*at, "abi")), hint=exc.hint
            ) from None

        resolved: list[EventAbi] = []
        for event_index, entry in enumerate(contract.events):
            written = entry if isinstance(entry, str) else entry.event
            loc = (*at, "events", event_index)
            event = _resolve_event(written, abi_events, document, loc)
            if isinstance(entry, EventOptions):
                contract._event_settings[event.signature] = EventSettings(
                    entry.start_block if entry.start_block is not None else contract.start_block,
                    _where_topics(event, entry.where, document, (*loc, "where")),
                )
            if any(e.signature == event.signature for e in resolved):
                raise document.error(
                    (*at, "events", event_index),
                    f"event {event.signature} is listed twice",
                    hint="list each event once",
                )
            resolved.append(event)
        contract._event_abis = resolved

        if "chains" not in contract.model_fields_set:
            contract.chains = list(chain_ids)
        for chain_index, chain_id in enumerate(contract.chains):
            if chain_id not in chain_ids:
                raise document.error(
                    (*at, "chains", chain_index),
                    f"chain {chain_id} is not declared under 'chains'",
                    hint="declared chain ids: "
                    + ", ".join(str(c) for c in chain_ids)
                    + f"; add chain {chain_id} to 'chains' or fix the id",
                )


def _topic_word(type_name: str, value: Any) -> str:
    """The 32-byte topic an indexed value of a static type is stored as."""
    if type_name == "address":
        if not isinstance(value, str) or not _ADDRESS.fullmatch(value):
            raise ValueError("expected a 0x-prefixed 20-byte address")
        return "0x" + "0" * 24 + value[2:].lower()
    if type_name == "bool":
        if not isinstance(value, bool):
            raise ValueError("expected true or false")
        return "0x" + format(int(value), "064x")
    if type_name.startswith(("uint", "int")):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError("expected a whole number")
        return "0x" + format(value % (1 << 256), "064x")
    if isinstance(value, str) and re.fullmatch(r"0x[0-9a-fA-F]{0,64}", value):
        if type_name.startswith("bytes") and type_name != "bytes":
            return "0x" + value[2:].lower().ljust(64, "0")
        if len(value) == 66:  # a dynamic value's topic: its keccak hash, as given
            return value.lower()
    raise ValueError(
        f"expected a 0x hex value for {type_name} (for string, bytes and arrays: the 32-byte "
        "keccak hash the chain stores as the topic)"
    )


def _where_topics(
    event: EventAbi, where: dict[str, Any], document: _Document, loc: Loc
) -> tuple[frozenset[str] | None, ...]:
    indexed = [p for p in event.inputs if p.indexed]
    if event.anonymous:
        raise document.error(
            loc, "'where' is not supported on anonymous events", hint="remove 'where'"
        )
    topics: list[frozenset[str] | None] = [None] * len(indexed)
    names = [p.name for p in indexed]
    for key, wanted in where.items():
        if key not in names:
            raise document.error(
                (*loc, key),
                f"{event.name} has no indexed parameter {key!r}",
                hint="'where' filters on indexed parameters: "
                + (", ".join(n for n in names if n) or "this event has none"),
            )
        param = indexed[names.index(key)]
        values = wanted if isinstance(wanted, list) else [wanted]
        try:
            topics[names.index(key)] = frozenset(_topic_word(param.type, v) for v in values)
        except ValueError as exc:
            raise document.error((*loc, key), f"{key}: {exc}", hint="fix the value") from None
    return tuple(topics)


def _resolve_event(
    written: str, abi_events: list[EventAbi], document: _Document, loc: Loc
) -> EventAbi:
    available = ", ".join(e.signature for e in abi_events) or "no events at all"
    if "(" not in written:
        matches = [e for e in abi_events if e.name == written.strip()]
        if len(matches) > 1:
            raise document.error(
                loc,
                f"event {written!r} is overloaded in the ABI",
                hint="write the full signature of the one you want: "
                + " or ".join(e.signature for e in matches),
            )
        if not matches:
            raise document.error(
                loc, f"event {written!r} is not in the ABI", hint=f"the ABI has: {available}"
            )
        return matches[0]

    try:
        wanted = parse_event_signature(written)
    except AbiError as exc:
        raise document.error(loc, exc.message, exc.hint) from None
    matches = [e for e in abi_events if e.signature == wanted.signature]
    if not matches:
        raise document.error(
            loc, f"event {wanted.signature} is not in the ABI", hint=f"the ABI has: {available}"
        )
    event = matches[0]
    wrote_indexed = any(p.indexed for p in wanted.inputs)
    if wrote_indexed and [p.indexed for p in wanted.inputs] != [p.indexed for p in event.inputs]:
        raise document.error(
            loc,
            f"the indexed inputs of {written!r} differ from the ABI's {_event_identity(event)}",
            hint="copy the event from the ABI, or leave 'indexed' out to take the ABI's",
        )
    return event


# --- entry point ------------------------------------------------------------------------------


def load_config(path: str | Path) -> ProjectConfig:
    """Read and check a project's evmflow.yaml.

    ``path`` is the project directory or the YAML file itself. Relative paths in the file are
    taken from the project directory (the file's directory). When ``handlers`` is not set,
    ``handlers.py`` is used if it exists, else the ``handlers/`` directory, else none.
    """
    file = _find_config_file(Path(path)).resolve()
    data, document = _read_yaml(file)
    if not isinstance(data, dict):
        raise ConfigError(
            "the config must be a mapping of keys (name, chains, contracts, ...)"
            + ("; the file is empty" if data is None else f", got {_show(data)}"),
            file=file,
            line=document.root.start_mark.line + 1 if document.root is not None else None,
            hint="start from the file that 'evmflow init' writes",
        )

    data = _interpolate_tree(data, (), document)
    try:
        config = ProjectConfig.model_validate(data)
    except pydantic.ValidationError as exc:
        raise _validation_failure(exc, document) from None

    config._root = file.parent
    config._path = file
    _resolve_paths(config, data, document)
    _resolve_chains(config, document)
    _resolve_contracts(config, document)
    _resolve_blocks(config, document)
    return config
