"""`met-harvester import-csv PATH` and `met-harvester diff-csv` (issue 4).

Exit codes of `import-csv`: 0 the file was imported (bad rows, if any, were reported with their
row and line and skipped); 2 the file is not the Met CSV, or a bad option (nothing written);
1 the database could not be written; 3 another process (a sync, the daemon) holds the data-dir
lock; 130 interrupted (committed batches are kept). `diff-csv`: 0 with the report, 1 when there is no mirror.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)

from met_harvester.commands.common import (
    ConfigOpt,
    DataDirOpt,
    build_settings,
    fail,
    hold_data_dir,
)
from met_harvester.csvimport.reader import CsvIssue, NotMetCsvError
from met_harvester.db.connection import db_path

_SHOWN_ISSUES = 20
_PLAIN_EVERY_SECONDS = 5.0

PathArg = Annotated[
    Path,
    typer.Argument(help="MetObjects.csv from github.com/metmuseum/openaccess (plain or .gz)."),
]
BatchOpt = Annotated[int, typer.Option("--batch-size", min=1, help="CSV rows per DB transaction.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of Markdown.")]
OutOpt = Annotated[
    Path | None, typer.Option("--out", help="Write the report to this file instead of stdout.")
]
SampleOpt = Annotated[int, typer.Option("--sample", min=0, help="Ids listed per category.")]


class _IssuePrinter:
    """Prints the first issues to stderr, then only counts them."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0

    def __call__(self, issue: CsvIssue) -> None:
        self.count += 1
        if self.count <= _SHOWN_ISSUES:
            # not fatal: the import goes on (skipped rows say "row skipped")
            typer.echo(f"met-harvester: warning: {self.path}: {issue}", err=True)


class _PlainProgress:
    """A plain line on stderr every few seconds (for pipes, logs and CI)."""

    def __init__(self) -> None:
        self.last = time.monotonic()
        self.finished = False

    def __call__(self, done: int, total: int, rows: int) -> None:
        now = time.monotonic()
        if self.finished:
            return
        if now - self.last >= _PLAIN_EVERY_SECONDS or done >= total:
            self.last = now
            self.finished = done >= total
            percent = 100.0 * done / total if total else 100.0
            typer.echo(f"import-csv: {rows:,} rows, {percent:.0f}% of the file", err=True)


def import_csv_cmd(
    path: PathArg,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
    batch_size: BatchOpt = 2000,
) -> None:
    """Import the Met's Open Access CSV into csv_objects and seed tags (source 'csv').

    Re-importing a file changes nothing. A newer file updates rows and keeps history.

    Bad rows are reported with their row and line, and skipped. Holds the data-dir lock
    (exit 3 when a sync or the daemon holds it).
    """
    settings = build_settings(config, data_dir=data_dir)
    lock = hold_data_dir(settings.data_dir, command="import-csv")  # no sync writes meanwhile
    try:
        _import_locked(path, settings.data_dir, batch_size)
    finally:
        lock.release()


def _import_locked(path: Path, data_dir: Path, batch_size: int) -> None:
    from met_harvester.csvimport.importer import import_csv
    from met_harvester.csvimport.writer import WriterProcessError

    printer = _IssuePrinter(path)
    console = Console(stderr=True)
    bar: Progress | None = None
    if console.is_terminal:
        bar = Progress(
            TextColumn("[bold]import-csv"),
            BarColumn(),
            TaskProgressColumn(),
            DownloadColumn(),
            TextColumn("{task.fields[rows]} rows"),
            TimeRemainingColumn(),
            console=console,
        )
    try:
        if bar is not None:
            with bar:
                task = bar.add_task(
                    "import", total=max(1, path.stat().st_size if path.is_file() else 1), rows="0"
                )

                def advance(done: int, total: int, rows: int) -> None:
                    bar.update(task, completed=done, total=total, rows=f"{rows:,}")

                report = import_csv(
                    path,
                    data_dir,
                    batch_size=batch_size,
                    progress=advance,
                    on_issue=printer,
                )
        else:
            report = import_csv(
                path,
                data_dir,
                batch_size=batch_size,
                progress=_PlainProgress(),
                on_issue=printer,
            )
    except NotMetCsvError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail("import-csv interrupted; the batches written so far are kept (run it again)", 130)
    except (sqlite3.Error, OSError, WriterProcessError) as exc:
        fail(f"cannot import into {db_path(data_dir)}: {exc}", 1)
    if printer.count > _SHOWN_ISSUES:
        typer.echo(
            f"met-harvester: {printer.count - _SHOWN_ISSUES} more issues not shown "
            f"(all counted; the first 1000 are in csv_imports #{report.import_id})",
            err=True,
        )
    typer.echo(f"import-csv {path}: {report.summary()}")
    sys.stdout.flush()


def diff_csv_cmd(
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
    out: OutOpt = None,
    sample: SampleOpt = 20,
) -> None:
    """Report where the CSV and the API disagree (a data-quality report for the museum).

    Ids in only one source; for ids in both: tags, public-domain flag and department.
    """
    from met_harvester.csvimport.diff import diff_csv_api
    from met_harvester.db.connection import connect_sync

    settings = build_settings(config, data_dir=data_dir)
    if not db_path(settings.data_dir).is_file():
        fail(f"no mirror at {db_path(settings.data_dir)} (run `met-harvester import-csv` first)", 1)
    try:
        conn = connect_sync(settings.data_dir)
        try:
            result = diff_csv_api(conn, sample_size=sample)
        finally:
            conn.close()
    except sqlite3.Error as exc:
        fail(f"cannot read {db_path(settings.data_dir)}: {exc}", 1)
    text = (
        json.dumps(result.to_json(), indent=2, ensure_ascii=False) + "\n"
        if as_json
        else result.to_markdown()
    )
    if out is None:
        typer.echo(text, nl=False)
        return
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        fail(f"cannot write {out}: {exc}", 1)
    typer.echo(f"diff-csv: {result.disagreements:,} disagreements; report written to {out}")


def register(app: typer.Typer) -> None:
    """Add `import-csv` and `diff-csv` to the CLI."""
    app.command("import-csv")(import_csv_cmd)
    app.command("diff-csv")(diff_csv_cmd)
