"""`met-harvester sync` (one pass) and `met-harvester status`.

Exit codes of `sync`: 0 the pass completed (records that failed are recorded and retried next
time); 1 a fatal error (one line on stderr: database not writable, listing unavailable, ...);
2 a bad option, setting or config file; 3 another process holds the data dir's lock;
130 / 143 stopped by SIGINT / SIGTERM after committing.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import sys
from pathlib import Path
from typing import Annotated, Any

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
    hold_data_dir,
)
from met_harvester.db.connection import db_path
from met_harvester.settings import HarvesterSettings

FullOpt = Annotated[
    bool, typer.Option("--full", help="Refetch every listed record, not only new and changed.")
]
LimitOpt = Annotated[
    int | None,
    typer.Option("--limit", min=0, help="Stop after this many records (a partial pass)."),
]
ObjectIdsOpt = Annotated[
    str | None,
    typer.Option("--object-ids", help="Fetch just these ids, comma-separated: 1,2,3."),
]
DepartmentsOpt = Annotated[
    str | None,
    typer.Option("--departments", help="Restrict the listing to department ids: 11,21."),
]
ImageVariantOpt = Annotated[
    str | None,
    typer.Option(
        "--image-variant",
        help="small (primaryImageSmall, falls back to primaryImage) or original.",
    ),
]
AdditionalImagesOpt = Annotated[
    bool | None,
    typer.Option(
        "--additional-images/--no-additional-images",
        help="Also download additionalImages (default off).",
    ),
]
ImageRateOpt = Annotated[
    float | None,
    typer.Option(
        "--image-rate",
        help="Ceiling on image requests/s (default 20). Given, it is also where a fresh "
        "database starts (else 2/s).",
    ),
]
ImageConcurrencyOpt = Annotated[
    int | None,
    typer.Option("--image-concurrency", help="Image downloads in flight (default 8)."),
]
ImageHostsOpt = Annotated[
    str | None,
    typer.Option(
        "--image-hosts",
        help="Allowed image hosts, comma-separated host or host:port "
        "(default images.metmuseum.org).",
    ),
]
MaxImageBytesOpt = Annotated[
    int | None,
    typer.Option("--max-image-bytes", help="Largest image body accepted (default 100000000)."),
]
ImageTimeoutOpt = Annotated[
    float | None,
    typer.Option("--image-timeout", help="Total deadline of one image download, s (default 120)."),
]
MaxBodyBytesOpt = Annotated[
    int | None,
    typer.Option("--max-body-bytes", help="Largest API body accepted (default 16 MiB)."),
]
ListingMarginOpt = Annotated[
    float | None,
    typer.Option(
        "--listing-margin",
        help="A full listing smaller than the last trustworthy one by more than this fraction "
        "withdraws nothing (default 0.02).",
    ),
]
KeepVersionsOpt = Annotated[
    int | None,
    typer.Option("--keep-versions", help="Old versions kept per object (default: all)."),
]
PriorityOpt = Annotated[
    str | None,
    typer.Option(
        "--priority",
        help="Order of CSV-known, unfetched ids: comma list of groups "
        "pd-tagged, pd, tagged, highlight, rest (default pd-tagged,pd,rest), or 'id'.",
    ),
]
BatchSizeOpt = Annotated[
    int | None, typer.Option("--batch-size", help="Records per DB transaction (default 200).")
]
MaxAttemptsOpt = Annotated[
    int | None,
    typer.Option("--max-attempts", help="Attempts per request before giving up (default 5)."),
]
BlockCooldownOpt = Annotated[
    float | None,
    typer.Option(
        "--block-cooldown",
        help="Seconds from a block answer to the one probe that tells a stray from a real "
        "block (default 2).",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a summary.")]


def parse_id_list(text: str | None, option: str) -> list[int] | None:
    """`"1,2, 3"` -> [1, 2, 3]; None stays None; anything else is a one-line error."""
    if text is None:
        return None
    ids: list[int] = []
    for part in text.replace("|", ",").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            value = int(part)
        except ValueError:
            fail(f"invalid {option} {text!r}: {part!r} is not an integer id")
        if value < 0:
            fail(f"invalid {option} {text!r}: {value} is negative")
        ids.append(value)
    if not ids:
        fail(f"invalid {option} {text!r}: no ids given")
    return ids


def _check_priority(spec: str) -> None:
    from met_harvester.priority import parse_priority

    try:
        parse_priority(spec)
    except ValueError as exc:
        fail(str(exc))


def _configure_logging(settings: HarvesterSettings) -> None:
    from met_harvester.logs import configure_logging

    try:
        configure_logging(settings.log_level)
    except (ValueError, TypeError) as exc:
        fail(f"invalid setting 'log_level': {exc}")


async def _sync_main(
    settings: HarvesterSettings,
    *,
    full: bool,
    limit: int | None,
    object_ids: list[int] | None,
    departments: list[int] | None,
) -> tuple[int, str | None, dict[str, Any] | None]:
    from met_harvester.progress import make_progress
    from met_harvester.sync import SyncError, run_sync

    stop_event = asyncio.Event()
    received: list[int] = []
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        received.append(signum)
        stop_event.set()
        # A second signal of the same kind ends the process at once (committed data is safe).
        loop.remove_signal_handler(signum)
        signal.signal(signum, signal.SIG_DFL)

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    progress = make_progress()
    try:
        report = await run_sync(
            settings,
            full=full,
            limit=limit,
            object_ids=object_ids,
            departments=departments,
            progress=progress,
            stop_event=stop_event,
        )
    except SyncError as exc:
        return 1, str(exc), None
    finally:
        progress.close()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    if received:
        return 128 + received[0], None, report.as_dict()
    return 0, None, report.as_dict()


def _summary(report: dict[str, Any]) -> str:
    c = report["counts"]
    line = (
        f"sync {report['mode']} {report['status']}: fetched {c.get('fetched', 0)} "
        f"(new {c.get('new', 0)}, updated {c.get('updated', 0)}, "
        f"unchanged {c.get('unchanged', 0)}), missing {c.get('missing', 0)}, "
        f"failed {c.get('failed', 0)}, quarantined {c.get('quarantined', 0)}, "
        f"withdrawn {c.get('withdrawn', 0)}"
    )
    images = report.get("images")
    if isinstance(images, dict):
        flat = ", ".join(f"{k} {v}" for k, v in images.items() if isinstance(v, int | float))
        line += f"; images: {flat}"
    return line


def sync(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    api_url: ApiUrlOpt = None,
    rate: RateOpt = None,
    initial_rate: InitialRateOpt = None,
    concurrency: ConcurrencyOpt = None,
    timeout: TimeoutOpt = None,
    user_agent: UserAgentOpt = None,
    full: FullOpt = False,
    limit: LimitOpt = None,
    object_ids: ObjectIdsOpt = None,
    departments: DepartmentsOpt = None,
    images: ImagesOpt = None,
    image_variant: ImageVariantOpt = None,
    additional_images: AdditionalImagesOpt = None,
    image_rate: ImageRateOpt = None,
    image_concurrency: ImageConcurrencyOpt = None,
    image_hosts: ImageHostsOpt = None,
    max_image_bytes: MaxImageBytesOpt = None,
    image_timeout: ImageTimeoutOpt = None,
    max_body_bytes: MaxBodyBytesOpt = None,
    listing_margin: ListingMarginOpt = None,
    keep_versions: KeepVersionsOpt = None,
    priority: PriorityOpt = None,
    batch_size: BatchSizeOpt = None,
    max_attempts: MaxAttemptsOpt = None,
    block_cooldown: BlockCooldownOpt = None,
    log_level: LogLevelOpt = None,
) -> None:
    """One sync pass: list ids, fetch new and changed records (then images), store them.

    The first run is full; later runs fetch new ids, ids changed since the last completed run
    (minus two days of overlap) and failed or quarantined ids due for retry. Every option can also come from env
    MET_HARVESTER_<NAME> or from --config. Exit 0 when the pass completed, 1 on a fatal error,
    2 on a bad option, 3 when the data dir is locked by another process, 130/143 when stopped
    by SIGINT/SIGTERM (work done so far is kept).
    """
    settings = build_settings(
        config,
        data_dir=data_dir,
        api_url=api_url,
        rate=rate,
        initial_rate=initial_rate,
        concurrency=concurrency,
        timeout=timeout,
        user_agent=user_agent,
        images=images,
        image_variant=image_variant,
        additional_images=additional_images,
        image_rate=image_rate,
        image_concurrency=image_concurrency,
        image_hosts=image_hosts,
        max_image_bytes=max_image_bytes,
        image_timeout=image_timeout,
        max_body_bytes=max_body_bytes,
        listing_margin=listing_margin,
        keep_versions=keep_versions,
        priority=priority,
        batch_size=batch_size,
        max_attempts=max_attempts,
        block_cooldown=block_cooldown,
        log_level=log_level,
    )
    ids = parse_id_list(object_ids, "--object-ids")
    department_ids = parse_id_list(departments, "--departments")
    run_pass(settings, full=full, limit=limit, object_ids=ids, departments=department_ids)


def run_pass(
    settings: HarvesterSettings,
    *,
    full: bool = False,
    limit: int | None = None,
    object_ids: list[int] | None = None,
    departments: list[int] | None = None,
    command: str = "sync",
) -> None:
    """Run one pass under the data-dir lock, print its summary and exit with its code."""
    _check_priority(settings.priority)
    _configure_logging(settings)
    lock = hold_data_dir(settings.data_dir, command=command)
    try:
        code, error, report = asyncio.run(
            _sync_main(
                settings,
                full=full,
                limit=limit,
                object_ids=object_ids,
                departments=departments,
            )
        )
    finally:
        lock.release()
    if error is not None:
        fail(error, code=code)
    if report is not None:
        typer.echo(_summary(report))
    raise typer.Exit(code)


async def _status_main(data_dir: Path) -> dict[str, Any]:
    from met_harvester.db.connection import open_db
    from met_harvester.status import collect_status

    db = await open_db(data_dir)
    try:
        return await collect_status(db)
    finally:
        await db.close()


def status(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """What the mirror holds: counts, the last sync, the API rate and the ETA of what is left."""
    settings = build_settings(config, data_dir=data_dir)
    if not db_path(settings.data_dir).is_file():
        fail(f"no mirror at {db_path(settings.data_dir)} (run `met-harvester sync` first)", 1)
    try:
        result = asyncio.run(_status_main(settings.data_dir))
    except (sqlite3.Error, OSError) as exc:
        fail(f"cannot read {db_path(settings.data_dir)}: {exc}", 1)
    if as_json:
        typer.echo(json.dumps(result, indent=2, default=str))
    else:
        from met_harvester.status import format_status

        typer.echo(format_status(result))
    sys.stdout.flush()


def register(app: typer.Typer) -> None:
    """Add `sync` and `status` to the CLI."""
    app.command("sync")(sync)
    app.command("status")(status)
