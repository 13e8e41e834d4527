"""evmflow codegen: stubs that let mypy check a project's handlers."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from evmflow.abi import AbiParam
from evmflow.codegen import generate, is_stale, python_type, refresh_if_stale
from evmflow.config import load_config
from evmflow.templates import write_template

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "erc20-mainnet"

TYPED_HANDLER = """\
from __future__ import annotations

from typing import TYPE_CHECKING

from evmflow.contracts import ERC20
from evmflow.entities import Account, Token

if TYPE_CHECKING:
    from evmflow.entities import Context


@ERC20.Transfer.handler
async def on_transfer(event: ERC20.Transfer.Event, context: Context) -> None:
    token = await context.Token.get(event.address)
    if token is None:
        token = Token(id=event.address, transfers=0, volume=0)
    token.volume += event.params.value
    context.Token.set(token)
    accounts = await context.Account.get_where(holder=event.params.from_)
    for account in accounts:
        account.balance -= event.params.value
        account.holder = bytes.fromhex(event.params.to[2:])
        context.Account.set(account)
    {extra}
"""


def mypy(project: Path, *files: str) -> subprocess.CompletedProcess[str]:
    (project / "mypy.ini").write_text(
        "[mypy]\nmypy_path = typings\ncheck_untyped_defs = True\nwarn_unused_ignores = True\n"
    )
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(project / ".mypy_cache"), *files],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    target = tmp_path / "erc20"
    shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns(".evmflow"))
    return target


def test_the_example_handlers_pass_mypy_with_the_generated_stubs(project):
    written = generate(project)

    assert sorted(p.name for p in written) == ["__init__.pyi", "contracts.pyi", "entities.pyi"]
    result = mypy(project, "handlers.py")
    assert result.returncode == 0, result.stdout
    assert result.stdout.startswith("Success: no issues found in 1 source file")


def test_a_typed_handler_passes_and_each_mistake_is_reported(project):
    generate(project)
    (project / "good.py").write_text(TYPED_HANDLER.format(extra="context.log.info('ok')"))
    mistakes = {
        "params": "print(event.params.amount)",
        "entity": "Account(id='a', token='t', holder='0x00', balance='0', transfers=0)",
        "missing": "Token(id='t', transfers=0)",
        "context": "context.Tokens.delete('x')",
        "read": "x: int = event.block_hash",
    }
    for name, line in mistakes.items():
        (project / f"bad_{name}.py").write_text(TYPED_HANDLER.format(extra=line))

    result = mypy(project, "good.py", *(f"bad_{name}.py" for name in mistakes))
    lines = result.stdout.splitlines()
    assert not [line for line in lines if line.startswith("good.py")], result.stdout
    reports = {
        name: "\n".join(line for line in lines if line.startswith(f"bad_{name}.py"))
        for name in mistakes
    }

    assert '"Params" has no attribute "amount"' in reports["params"]
    assert 'Argument "balance" to "Account" has incompatible type "str"' in reports["entity"]
    assert 'Missing named argument "volume" for "Token"' in reports["missing"]
    assert '"Context" has no attribute "Tokens"' in reports["context"]
    assert 'Incompatible types in assignment (expression has type "str"' in reports["read"]
    assert all("error" in r for r in reports.values())


def test_a_handler_for_the_wrong_event_type_is_refused(project):
    generate(project)
    (project / "wrong.py").write_text(
        "from evmflow.contracts import ERC20\n\n\n"
        "@ERC20.Transfer.handler\n"
        "async def on_transfer(event: int, context: object) -> None:\n"
        "    pass\n"
    )
    result = mypy(project, "wrong.py")
    assert 'Argument 1 to "handler" of "Transfer" has incompatible type' in result.stdout


@pytest.mark.parametrize("template", ["blank", "uniswap-v2"])
def test_template_handlers_pass_mypy(tmp_path, template):
    target = tmp_path / template
    write_template(template, target)
    generate(target)
    result = mypy(target, "handlers.py")
    assert result.returncode == 0, result.stdout


def test_stubs_are_rewritten_only_when_an_input_changed(project):
    config = load_config(project)
    assert not is_stale(config)  # no stubs yet: nothing to refresh
    assert refresh_if_stale(config) == []

    generate(config)
    assert not is_stale(config)
    assert refresh_if_stale(config) == []

    schema = project / "schema.graphql"
    schema.write_text(
        schema.read_text().replace(
            "  transfers: Int!\n}", "  transfers: Int!\n  decimals: Int\n}", 1
        )
    )
    config = load_config(project)
    assert is_stale(config)
    rewritten = refresh_if_stale(config)

    assert [p.name for p in rewritten] == ["__init__.pyi", "entities.pyi", "contracts.pyi"]
    assert "    decimals: int | None = None," in (rewritten[1]).read_text()
    assert not is_stale(load_config(project))


@pytest.mark.parametrize(
    ("abi_type", "indexed", "expected"),
    [
        ("uint256", False, "int"),
        ("int24", False, "int"),
        ("address", False, "str"),
        ("bytes32", False, "str"),
        ("string", True, "str"),
        ("bool", False, "bool"),
        ("ufixed128x18", False, "Decimal"),
        ("address[]", False, "list[str]"),
        ("uint8[2][]", False, "list[list[int]]"),
    ],
)
def test_abi_types_map_to_the_python_types_the_decoder_gives(abi_type, indexed, expected):
    assert python_type(AbiParam("x", abi_type, indexed)) == expected
