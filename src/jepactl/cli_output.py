"""What every command prints on stdout: a metric/value table for people, or with ``--json``
one shape for every command and domain, ``{"command", "run", "recipe", "results", "settings"}``.

``probe`` and ``finetune`` also keep that document in the run folder,
``RUN/probes/<UTC time>-<command>.json``, where ``jepactl report`` finds it.
"""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from jepactl.errors import UserError

stdout = Console()
stderr = Console(stderr=True)


def flag(name: str, help: str):  # noqa: A002 - typer's own keyword
    """An option that takes no value: ``--quiet``, shown in --help without typer's ``<bool>``
    (which reads as if ``--quiet true`` were the way to set it)."""
    return typer.Option(False, name, help=help, metavar="")


PROBES_DIR = "probes"  # RUN/probes/<UTC time>-<command>.json: the kept results


def document(
    command: str,
    results: dict[str, Any],
    settings: dict[str, Any],
    run: Optional[Path] = None,
    recipe: Optional[str] = None,
) -> dict[str, Any]:
    """Return the one ``--json`` shape: ``{"command", "run", "recipe", "results", "settings"}``;
    ``recipe`` defaults to the name in ``run``'s recipe (a run folder or an export)."""
    if recipe is None and run is not None:
        recipe = _recipe_name(run)
    return {
        "command": command,
        "run": None if run is None else str(run),
        "recipe": recipe,
        "results": results,
        "settings": settings,
    }


def as_text(doc: dict[str, Any]) -> str:
    """The JSON text of a document, as ``--json`` prints it and the run folder keeps it."""
    return json.dumps(doc, indent=2, default=str)


def keep_in_run(doc: dict[str, Any], run: Optional[Path]) -> Optional[Path]:
    """Write ``doc`` to ``RUN/probes/<UTC time>-<command>.json`` (temp file + rename) when
    ``run`` is a run folder (recipe.yaml and metrics.jsonl; not an export); return the path.

    A folder that cannot be written (read-only, full) is one warning line on stderr and None:
    the result is printed all the same.
    """
    if run is None or not _is_trained_run(Path(run)):
        return None
    from jepactl.output_paths import StagedFiles

    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S-%f")
    path = Path(run) / PROBES_DIR / f"{stamp}-{doc['command']}.json"
    try:
        with StagedFiles() as stage:
            stage.path(path).write_text(as_text(doc) + "\n")
    except (UserError, OSError) as err:
        if isinstance(err, OSError):
            from jepactl.output_paths import describe_os_error

            err = describe_os_error(err, path, writing=True)
        stderr.print(
            f"[yellow]warning:[/] result not kept in the run folder: {escape(str(err))}",
            highlight=False,
            soft_wrap=True,
        )
        return None
    return path


def _is_trained_run(path: Path) -> bool:
    return (path / "recipe.yaml").is_file() and (path / "metrics.jsonl").is_file()


def process_rank() -> int:
    """This process's rank under a multi-process launcher (0 when launched alone)."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def emit(
    command: str,
    results: dict[str, Any],
    as_json: bool,
    settings: dict[str, Any],
    run: Optional[Path] = None,
    recipe: Optional[str] = None,
    title: Optional[str] = None,
    keep: bool = False,
) -> None:
    """Print a command's ``results``: a metric/value table, or with ``--json`` one shape for
    every command and domain: ``{"command", "run", "recipe", "results", "settings"}``.

    ``settings`` is what was asked (the command's options); ``recipe`` defaults to the name in
    ``run``'s recipe (a run folder or an export). Seeded metrics come as ``metric``,
    ``metric_std``, ``metric_per_seed`` (``evaluate/seeds.py``); the table leaves out the std
    and per-seed rows of a single seed, which say nothing more. ``keep``: also write the JSON
    document into the run folder (``keep_in_run``). Under several processes (``accelerate
    launch``, ``torchrun``: ``RANK`` set) only rank 0 prints, so a pipeline reads one document.
    """
    if process_rank() != 0:
        return
    if as_json or keep:
        doc = document(command, results, settings, run, recipe)
        if keep:
            keep_in_run(doc, run)
        if as_json:
            print(as_text(doc))
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
