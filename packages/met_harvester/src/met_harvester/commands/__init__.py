"""CLI commands, one module per command group; `register_all` adds them to the Typer app."""

from __future__ import annotations

import importlib

import typer

# Each module defines `register(app: typer.Typer) -> None`.
COMMAND_MODULES = (
    "met_harvester.commands.sync_cmd",  # sync, status (issue 2)
    "met_harvester.commands.fake_api_cmd",  # fake-api (issue 2/3)
    "met_harvester.commands.daemon_cmd",  # daemon (issue 5)
    "met_harvester.commands.csv_cmd",  # import-csv, diff-csv (issue 4)
    "met_harvester.commands.images_cmd",  # verify, gc (issue 3)
    "met_harvester.commands.retry_cmd",  # retry (issue 14)
)


def register_all(app: typer.Typer) -> None:
    """Register every command module's commands on `app`."""
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)
