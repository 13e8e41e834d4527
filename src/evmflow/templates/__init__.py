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
        parts = path.relative_to(source).parts
        # Leave out what running the template in place leaves behind (the bundled example
        # is the erc20 template itself).
        if any(p.startswith((".", "__pycache__")) or p == "typings" for p in parts):
            continue
        target = directory / path.relative_to(source)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.name == "evmflow.yaml":
            text = re.sub(r"(?m)^name:.*$", f"name: {name}", path.read_text(), count=1)
            text = re.sub(r"(?m)^# This is also the bundled example.*\n", "", text)
            target.write_text(text)
        else:
            shutil.copyfile(path, target)
        written.append(target)
    return written
