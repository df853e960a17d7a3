"""`verify` and `gc`: integrity of the image store and removal of what it no longer needs."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from met_harvester.commands.common import (
    ConfigOpt,
    DataDirOpt,
    build_settings,
    fail,
    hold_data_dir,
)
from met_harvester.db.connection import db_path


@contextlib.contextmanager
def _data_dir_lock(data_dir: Path, command: str) -> Iterator[None]:
    """Hold the data-dir lock while changing the store, so no sync runs meanwhile (exit 3, as
    for `sync`, when another process holds it)."""
    lock = hold_data_dir(data_dir, command=command)
    try:
        yield
    finally:
        lock.release()


def _mirror_dir(config: Path | None, data_dir: Path | None) -> Path:
    settings = build_settings(config, data_dir=data_dir)
    if not db_path(settings.data_dir).is_file():
        fail(f"no mirror at {settings.data_dir} ({db_path(settings.data_dir)} does not exist)")
    return settings.data_dir


def register(app: typer.Typer) -> None:
    """Add `verify` and `gc` to the CLI."""

    @app.command("verify")
    def verify(
        sample: Annotated[
            str | None,
            typer.Option(
                "--sample",
                help="Re-hash only this share of the blobs, e.g. 5% (sizes are always checked).",
            ),
        ] = None,
        repair: Annotated[
            bool,
            typer.Option(
                "--repair",
                help="Move corrupt blobs aside and re-queue the affected images for the next sync.",
            ),
        ] = False,
        data_dir: DataDirOpt = None,
        config: ConfigOpt = None,
    ) -> None:
        """Re-hash blobs; find missing, corrupt and orphaned blobs and rows pointing nowhere;
        run SQLite integrity_check. Exit 0 when clean, 1 when problems were found, 3 when
        --repair finds the data dir locked by a sync or daemon."""
        from met_harvester.images.verify import parse_sample, verify_store

        fraction = None
        if sample is not None:
            try:
                fraction = parse_sample(sample)
            except ValueError as exc:
                fail(str(exc))
        where = _mirror_dir(config, data_dir)
        if repair:
            with _data_dir_lock(where, "verify --repair"):
                report = verify_store(where, sample=fraction, repair=True)
        else:
            report = verify_store(where, sample=fraction)
        for line in report.summary():
            typer.echo(line)
        raise typer.Exit(1 if report.problems else 0)

    @app.command("gc")
    def gc(
        apply: Annotated[
            bool, typer.Option("--apply", help="Remove the files (default: a dry run).")
        ] = False,
        min_age: Annotated[
            float,
            typer.Option(
                "--min-age",
                help="Keep unreferenced blobs younger than this many seconds (a sync may "
                "not have recorded them yet).",
                min=0,
            ),
        ] = 600.0,
        data_dir: DataDirOpt = None,
        config: ConfigOpt = None,
    ) -> None:
        """Remove unreferenced blobs, stale temp files and corrupt blobs set aside by verify.
        A dry run by default: prints what it would remove. --apply exits 3 when a sync or
        daemon holds the data dir."""
        from met_harvester.images.gc import collect_garbage

        where = _mirror_dir(config, data_dir)
        if apply:
            with _data_dir_lock(where, "gc"):
                report = collect_garbage(where, apply=True, min_age=min_age)
        else:
            report = collect_garbage(where, apply=False, min_age=min_age)
        for line in report.summary():
            typer.echo(line)
