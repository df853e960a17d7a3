"""`met-harvester daemon`: scheduled incremental syncs with a health/metrics endpoint."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from met_harvester.commands.common import (
    ApiUrlOpt,
    ConcurrencyOpt,
    ConfigOpt,
    DataDirOpt,
    ImagesOpt,
    InitialRateOpt,
    LogLevelOpt,
    RateOpt,
    TimeoutOpt,
    UserAgentOpt,
    build_settings,
    fail,
)
from met_harvester.daemon.runner import Daemon
from met_harvester.daemon.schedule import Schedule
from met_harvester.datadir import LockHeldError
from met_harvester.logs import configure_logging


def daemon(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    api_url: ApiUrlOpt = None,
    rate: RateOpt = None,
    initial_rate: InitialRateOpt = None,
    concurrency: ConcurrencyOpt = None,
    timeout: TimeoutOpt = None,
    user_agent: UserAgentOpt = None,
    interval: Annotated[
        str | None,
        typer.Option("--interval", help="Run every interval: 45s, 30m, 6h, 1d (default 6h)."),
    ] = None,
    at: Annotated[
        str | None, typer.Option("--at", help="Run daily at HH:MM instead of an interval.")
    ] = None,
    timezone: Annotated[
        str | None, typer.Option("--timezone", help="Time zone of --at (default UTC).")
    ] = None,
    grace: Annotated[
        float | None,
        typer.Option("--grace", help="Seconds in-flight work gets on SIGTERM/SIGINT (default 30)."),
    ] = None,
    listen: Annotated[
        str | None,
        typer.Option(
            "--listen", help="host:port of /healthz, /readyz, /metrics (default 127.0.0.1:9108)."
        ),
    ] = None,
    log_level: LogLevelOpt = None,
    images: ImagesOpt = None,
    max_runs: Annotated[
        int | None,
        typer.Option("--max-runs", min=1, help="Exit after this many runs (default: run forever)."),
    ] = None,
) -> None:
    """Run `sync` on a schedule until SIGTERM/SIGINT; one daemon or sync per data dir."""
    settings = build_settings(
        config,
        data_dir=data_dir,
        api_url=api_url,
        rate=rate,
        initial_rate=initial_rate,
        concurrency=concurrency,
        timeout=timeout,
        user_agent=user_agent,
        interval=interval,
        at=at,
        timezone=timezone,
        grace=grace,
        listen=listen,
        log_level=log_level,
        images=images,
    )
    try:
        configure_logging(settings.log_level)
        schedule = Schedule.from_options(settings.interval, settings.at, settings.timezone)
    except ValueError as exc:
        fail(str(exc))

    async def main() -> int:
        runner = Daemon(settings, schedule, max_runs=max_runs)
        runner.install_signal_handlers()
        return await runner.run()

    try:
        code = asyncio.run(main())
    except LockHeldError as exc:
        fail(str(exc), code=3)
    except OSError as exc:
        fail(f"cannot start the daemon: {exc}")
    raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    """Add `daemon` to the CLI."""
    app.command("daemon")(daemon)
