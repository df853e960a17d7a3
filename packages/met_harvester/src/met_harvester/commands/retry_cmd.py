"""`met-harvester retry`: fetch quarantined and failed ids now, without waiting for their back-off.

Exit codes as for `sync` (0 the pass completed; 1 fatal; 2 bad option; 3 data dir locked).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from met_harvester.commands.common import (
    ApiUrlOpt,
    ConfigOpt,
    DataDirOpt,
    LogLevelOpt,
    RateOpt,
    build_settings,
    fail,
)
from met_harvester.commands.sync_cmd import ObjectIdsOpt, parse_id_list, run_pass
from met_harvester.db.connection import db_path

QuarantinedOpt = Annotated[
    bool, typer.Option("--quarantined", help="Retry every quarantined id (due or not).")
]
FailedOpt = Annotated[bool, typer.Option("--failed", help="Retry every failed fetch (due or not).")]


async def _trouble_ids(data_dir: Path, *, quarantined: bool, failed: bool) -> list[int]:
    from met_harvester.db.connection import open_db
    from met_harvester.db.trouble import trouble_ids

    db = await open_db(data_dir)
    try:
        return await trouble_ids(db, quarantined=quarantined, failed=failed)
    finally:
        await db.close()


def retry(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    api_url: ApiUrlOpt = None,
    rate: RateOpt = None,
    quarantined: QuarantinedOpt = False,
    failed: FailedOpt = False,
    object_ids: ObjectIdsOpt = None,
    log_level: LogLevelOpt = None,
) -> None:
    """Fetch quarantined and failed ids now (both when neither flag nor --object-ids is given).

    Without this, they are retried by later passes: failures after 1 min doubling up to 7 days,
    quarantined ids after 1, 7, then every 30 days. A record that now stores leaves the
    quarantine / failures; one that fails again gets its next back-off.
    """
    settings = build_settings(
        config, data_dir=data_dir, api_url=api_url, rate=rate, log_level=log_level
    )
    if not db_path(settings.data_dir).is_file():
        fail(f"no mirror at {db_path(settings.data_dir)} (run `met-harvester sync` first)", 1)
    ids = parse_id_list(object_ids, "--object-ids") or []
    if quarantined or failed or not ids:
        both = not (quarantined or failed)
        ids += asyncio.run(
            _trouble_ids(settings.data_dir, quarantined=quarantined or both, failed=failed or both)
        )
    if not ids:
        typer.echo("nothing to retry: no quarantined or failed ids")
        raise typer.Exit(0)
    run_pass(settings, object_ids=sorted(set(ids)), command="retry")


def register(app: typer.Typer) -> None:
    """Add `retry` to the CLI."""
    app.command("retry")(retry)
