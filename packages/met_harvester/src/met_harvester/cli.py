"""`met-harvester`: the command-line interface. Each command lives in `met_harvester.commands.*`
and registers itself on `app`; options can also come from env `MET_HARVESTER_*` or `--config`."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="met-harvester",
    help="Mirror The Met's Open Access collection (records and images) into SQLite.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register_commands() -> None:
    """Add every command module's commands to `app` (once per process)."""
    if app.registered_commands:
        return
    from met_harvester.commands import register_all

    register_all(app)


def main() -> None:
    """Entry point of the `met-harvester` script."""
    _register_commands()
    app()
