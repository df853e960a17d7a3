"""Options shared by several commands, and the one-line fatal error helper."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from pydantic import ValidationError

from met_harvester.settings import HarvesterSettings, load_settings

if TYPE_CHECKING:
    from met_harvester.datadir import DataDirLock

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", help="TOML file with settings (keys as the long options, _ for -)."),
]
DataDirOpt = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Data dir (default ./data); DB at <data-dir>/met.sqlite."),
]
ApiUrlOpt = Annotated[str | None, typer.Option("--api-url", help="Base URL of the Met API.")]
RateOpt = Annotated[
    float | None,
    typer.Option(
        "--rate",
        help="Ceiling on API requests/s (default 80, the documented limit). Given, it is also "
        "where a fresh database starts.",
    ),
]
InitialRateOpt = Annotated[
    float | None,
    typer.Option(
        "--initial-rate",
        help="API requests/s to start at (default: what the last run learned, else 1, or "
        "--rate when given).",
    ),
]
ConcurrencyOpt = Annotated[
    int | None,
    typer.Option(
        "--concurrency",
        help="API requests in flight (default: 2, more as the rate grows: half a second's worth).",
    ),
]
TimeoutOpt = Annotated[
    float | None, typer.Option("--timeout", help="Per-request timeout in seconds (default 30).")
]
UserAgentOpt = Annotated[
    str | None, typer.Option("--user-agent", help="User-Agent header (default names the tool).")
]
ImagesOpt = Annotated[
    bool | None,
    typer.Option(
        "--images/--no-images",
        help="Download images beside the records, through their own pool (default on).",
    ),
]
LogLevelOpt = Annotated[
    str | None,
    typer.Option("--log-level", help="DEBUG, INFO, WARNING or ERROR (default INFO)."),
]


def fail(message: str, code: int = 2) -> NoReturn:
    """Print one clear line to stderr and exit with `code`."""
    typer.echo(f"met-harvester: error: {message}", err=True)
    sys.exit(code)


def hold_data_dir(data_dir: Path, *, command: str) -> DataDirLock:
    """Take the data-dir lock for a writer, or exit: 3 when another process holds it, 1 when
    the data dir cannot be used."""
    from met_harvester.datadir import DataDirLock, LockHeldError

    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        lock = DataDirLock(data_dir, command=command)
        lock.acquire()
    except LockHeldError as exc:
        fail(str(exc), code=3)  # 3: another sync, import or daemon holds this data dir
    except OSError as exc:
        fail(f"cannot use data dir {data_dir}: {exc.strerror or exc}", code=1)
    return lock


def build_settings(config: Path | None, **overrides: Any) -> HarvesterSettings:
    """Settings from file, env and flags, or a one-line error naming the bad option."""
    try:
        return load_settings(config, **overrides)
    except FileNotFoundError as exc:
        fail(str(exc))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "settings"
        fail(f"invalid setting {where!r}: {first['msg']}")
    except Exception as exc:  # e.g. a TOML syntax error
        fail(f"cannot read settings: {exc}")
