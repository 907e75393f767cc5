"""``jepactl recipes list`` and ``jepactl recipes show``: the packaged recipes."""

from __future__ import annotations

import json
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from jepactl.cli_errors import guard
from jepactl.cli_output import flag
from jepactl.errors import UserError

recipes_app = typer.Typer(no_args_is_help=True, help="List and show packaged recipes.")
stdout = Console()


@recipes_app.command("list")
def recipes_list(as_json: bool = flag("--json", help="Print JSON.")) -> None:
    """List packaged recipes.

    Example: `jepactl recipes list`
    """

    def go() -> None:
        from jepactl.recipe import list_recipes, load_recipe

        rows = []
        for name in list_recipes():
            try:
                recipe = load_recipe(name)
            except UserError as err:  # one broken file must not hide the others
                rows.append(
                    {
                        "name": name,
                        "method": "?",
                        "domain": name.split("/")[0],
                        "description": f"invalid: {err}",
                    }
                )
                continue
            rows.append(
                {
                    "name": name,
                    "method": recipe.method,
                    "domain": recipe.domain,
                    "description": recipe.description,
                }
            )
        if as_json:
            print(json.dumps(rows, indent=2))
            return
        table = Table(title="recipes")
        for column in ("name", "method", "domain"):
            table.add_column(column, no_wrap=True)
        table.add_column("description")
        for row in rows:
            table.add_row(*row.values())
        stdout.print(table)

    guard(go)


@recipes_app.command("show")
def recipes_show(
    name: str = typer.Argument(..., help="Recipe name, domain or YAML path."),
    overrides: Optional[list[str]] = typer.Argument(
        None, help="`section.key=value` overrides.", show_default=False
    ),
) -> None:
    """Print a recipe fully resolved: every default, after overrides.

    Example: `jepactl recipes show image/ijepa train.batch_size=32`
    """

    def go() -> None:
        from jepactl.recipe import dump_recipe, load_recipe

        print(dump_recipe(load_recipe(name, list(overrides or []))), end="")

    guard(go)
