"""`met-harvester`: the command-line interface. Each command lives in `met_harvester.commands.*`
and registers itself on `app`; options can also come from env `MET_HARVESTER_*` or `--config`."""

from __future__ import annotations

import sys

import typer

try:  # typer >= 0.20 vendors click as typer._click
    from typer._click import exceptions as cli_errors
except ImportError:  # pragma: no cover - older typer on plain click
    from click import exceptions as cli_errors  # type: ignore[no-redef]

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


def main(args: list[str] | None = None) -> None:
    """Entry point of the `met-harvester` script.

    Usage errors (an unknown option, a value that does not parse) print one line naming the
    option, instead of a framed panel, and exit 2.
    """
    _register_commands()
    command = typer.main.get_command(app)
    try:
        code = command.main(args=args, prog_name="met-harvester", standalone_mode=False)
    except cli_errors.UsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError" and exc.ctx is not None:
            typer.echo(exc.ctx.get_help())
            sys.exit(0)
        where = f"{exc.ctx.command_path}: " if exc.ctx is not None else ""
        typer.echo(f"met-harvester: error: {where}{exc.format_message()}", err=True)
        sys.exit(2)
    except cli_errors.ClickException as exc:
        typer.echo(f"met-harvester: error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.echo("met-harvester: aborted", err=True)
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)
