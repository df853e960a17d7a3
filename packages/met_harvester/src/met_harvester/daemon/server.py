"""The daemon's HTTP endpoint: /healthz (liveness), /readyz (readiness), /metrics (Prometheus)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Gauge, generate_latest

from met_harvester.db.connection import db_path
from met_harvester.db.counts import read_counts
from met_harvester.metrics import HarvesterMetrics


@dataclass
class DaemonState:
    """What the endpoint reports; the run loop updates it."""

    data_dir: Path
    started_at: float = field(default_factory=time.time)
    migrating: bool = True
    syncing: bool = False
    runs_completed: int = 0
    runs_failed: int = 0
    last_error: str | None = None
    next_run_at: float | None = None


def _db_readable(path: Path) -> str | None:
    """None if the DB answers a read within a short timeout, else the reason."""
    if not path.exists():
        return "database does not exist yet"
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=0.5)
        try:
            conn.execute("SELECT count(*) FROM schema_migrations").fetchone()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return f"database not readable: {exc}"
    return None


METRIC_KINDS = (
    "objects",
    "withdrawn",
    "quarantined",
    "failures",
    "missing",
    "images",
    "image_failures",
    "images_refused",
)
"""`met_db_rows{kind=...}`: these `db.counts` values, as `status` reports them."""


class DBGauges:
    """Gauges refreshed from the DB at scrape time, so /metrics totals equal the DB."""

    def __init__(self, metrics: HarvesterMetrics) -> None:
        self.gauge = Gauge(
            "met_db_rows",
            "Rows in the mirror by kind, read at scrape time.",
            ["kind"],
            registry=metrics.registry,
        )

    def refresh(self, path: Path) -> None:
        """Read every count; leave the old values if the DB cannot be read right now."""
        try:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=0.5)
        except sqlite3.Error:
            return
        try:
            for kind, value in read_counts(conn, METRIC_KINDS).items():
                self.gauge.labels(kind).set(value)
        except sqlite3.Error:
            pass
        finally:
            conn.close()


def make_app(state: DaemonState, metrics: HarvesterMetrics) -> web.Application:
    """The aiohttp application serving the three endpoints."""
    db_gauges = DBGauges(metrics)
    path = db_path(state.data_dir)

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response(
            {"status": "ok", "uptime_s": round(time.time() - state.started_at, 1)}
        )

    async def readyz(_: web.Request) -> web.Response:
        reason = "migrations running" if state.migrating else _db_readable(path)
        body = {
            "ready": reason is None,
            "reason": reason,
            "syncing": state.syncing,
            "runs_completed": state.runs_completed,
            "runs_failed": state.runs_failed,
            "last_error": state.last_error,
            "next_run_at": state.next_run_at,
        }
        return web.json_response(body, status=200 if reason is None else 503)

    async def metrics_view(_: web.Request) -> web.Response:
        if path.exists():  # its own read-only connection, off the loop the limiter runs on
            await asyncio.to_thread(db_gauges.refresh, path)
        resp = web.Response(body=generate_latest(metrics.registry))
        resp.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        return resp

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_view)
    return app


def parse_listen(text: str) -> tuple[str, int]:
    """`"127.0.0.1:9108"` → ("127.0.0.1", 9108); `"[::1]:9108"` works too."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"bad --listen {text!r}: use host:port, e.g. 127.0.0.1:9108")
    return host.strip("[]"), int(port)
