"""Render the `met-harvester` command reference (docs/cli.md) from the CLI itself, so the page
can never drift from the code: `python -m met_harvester.cli_reference > docs/cli.md`
(a test checks the committed page is current)."""

from __future__ import annotations

import sys
from typing import Any

import typer

from met_harvester.cli import _register_commands, app
from met_harvester.settings import HarvesterSettings

HEADER = """# `met-harvester` command reference

Generated from the CLI by `python -m met_harvester.cli_reference > docs/cli.md`; a test keeps it
current. Every option that maps to a setting can also come from the environment
(`MET_HARVESTER_<NAME>`) or from the TOML file given with `--config` (key `<name>`, `_` for `-`).
Precedence: defaults < `--config` file < environment < flags. `python -m met_harvester` is the
same program.
"""


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _option_row(param: Any) -> str:
    opts = " / ".join(f"`{o}`" for o in [*param.opts, *getattr(param, "secondary_opts", [])])
    field = param.name if param.name in HarvesterSettings.model_fields else None
    env = f"`MET_HARVESTER_{field.upper()}`" if field else ""
    return f"| {opts} | {env} | {_cell(param.help or '')} |"


def render() -> str:
    """The whole reference page as markdown."""
    _register_commands()
    group = typer.main.get_command(app)
    lines = [HEADER]
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        lines.append(f"## `met-harvester {name}`\n")
        lines.append(_cell(command.help or "") + "\n")
        args = [p for p in command.params if getattr(p, "param_type_name", "") == "argument"]
        if args:
            names = " ".join(p.name.upper() for p in args)
            lines.append(f"Arguments: `{names}`.\n")
        options = [p for p in command.params if getattr(p, "param_type_name", "") == "option"]
        if options:
            lines.append("| option | environment | what |")
            lines.append("|---|---|---|")
            lines.extend(_option_row(p) for p in options if "--help" not in p.opts)
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
