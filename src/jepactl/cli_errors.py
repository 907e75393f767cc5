"""How a command fails: a user error (bad path, bad recipe key, unreadable data) or an
operating-system error (read-only disk, disk full, permission denied) is one line on stderr
naming what to fix, and exit code 2; ``--debug`` (``STATE["debug"]``) shows the traceback.
Anything else exits 1.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import typer
from rich.console import Console
from rich.markup import escape

from jepactl.errors import UserError

stderr = Console(stderr=True)
STATE = {"debug": False}


def guard(fn: Callable[[], Any]) -> Any:
    """Run ``fn``; a UserError or an OSError becomes one line on stderr and exit code 2."""
    try:
        return fn()
    except (UserError, OSError) as err:
        if STATE["debug"]:
            raise
        if isinstance(err, OSError):
            from jepactl.output_paths import describe_os_error

            err = describe_os_error(err)
        # escape: a path like 'shapes[train]' is not rich markup
        stderr.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        stderr.print("[yellow]interrupted[/]")
        raise typer.Exit(130) from None


def positive(name: str, value: Optional[int]) -> None:
    if value is not None and value < 1:
        raise UserError(f"{name} must be a positive integer, got {value}")
