"""Project templates for ``evmflow init``."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from ..errors import UserError

TEMPLATES = Path(__file__).parent


def available() -> list[str]:
    return sorted(p.name for p in TEMPLATES.iterdir() if p.is_dir() and not p.name.startswith("_"))


def write_template(template: str, directory: Path) -> list[Path]:
    """Copy a template into ``directory`` and name the project after it."""
    source = TEMPLATES / template
    if not source.is_dir():
        raise UserError(
            f"no template {template!r}", hint=f"choose one of: {', '.join(available())}"
        )
    directory = Path(directory)
    if directory.exists() and any(directory.iterdir()):
        raise UserError(
            f"{directory} is not empty", hint="give a new or empty directory to 'evmflow init'"
        )
    name = re.sub(r"[^A-Za-z0-9_-]", "-", directory.resolve().name) or "evmflow-project"
    written = []
    for path in sorted(source.rglob("*")):
        if "__pycache__" in path.parts or path.name == "__init__.py" and path.parent == source:
            continue
        target = directory / path.relative_to(source)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.name == "evmflow.yaml":
            target.write_text(path.read_text().replace("{{name}}", name))
        else:
            shutil.copyfile(path, target)
        written.append(target)
    return written
