"""What every command prints on stdout: a metric/value table for people, or with ``--json``
one shape for every command and domain, ``{"command", "run", "recipe", "results", "settings"}``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from rich.console import Console
from rich.table import Table

from jepactl.errors import UserError

stdout = Console()


def emit(
    command: str,
    results: dict[str, Any],
    as_json: bool,
    settings: dict[str, Any],
    run: Optional[Path] = None,
    recipe: Optional[str] = None,
    title: Optional[str] = None,
) -> None:
    """Print a command's ``results``: a metric/value table, or with ``--json`` one shape for
    every command and domain: ``{"command", "run", "recipe", "results", "settings"}``.

    ``settings`` is what was asked (the command's options); ``recipe`` defaults to the name in
    ``run``'s recipe (a run folder or an export). Seeded metrics come as ``metric``,
    ``metric_std``, ``metric_per_seed`` (``evaluate/seeds.py``); the table leaves out the std
    and per-seed rows of a single seed, which say nothing more.
    """
    if as_json:
        if recipe is None and run is not None:
            recipe = _recipe_name(run)
        print(
            json.dumps(
                {
                    "command": command,
                    "run": None if run is None else str(run),
                    "recipe": recipe,
                    "results": results,
                    "settings": settings,
                },
                indent=2,
                default=str,
            )
        )
        return
    table = Table(title=title or command, show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in results.items():
        if not _single_seed_detail(key, results):
            table.add_row(key, _cell(value))
    stdout.print(table)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list) and value and all(isinstance(v, float) for v in value):
        return "[" + ", ".join(f"{v:.4g}" for v in value) + "]"
    return str(value)


def _single_seed_detail(key: str, results: dict[str, Any]) -> bool:
    """True for ``metric_std`` / ``metric_per_seed`` of a metric measured with one seed."""
    for suffix in ("_std", "_per_seed"):
        if key.endswith(suffix):
            per_seed = results.get(key[: -len(suffix)] + "_per_seed")
            return isinstance(per_seed, list) and len(per_seed) == 1
    return False


def _recipe_name(run: Path) -> Optional[str]:
    """The recipe name stored in a run folder or an export (None where none can be read)."""
    from jepactl.evaluate.source import open_recipe

    try:
        return open_recipe(Path(run)).name or None
    except (UserError, OSError, KeyError, ValueError):  # the results are printed regardless
        return None
