"""The daemon's run loop: scheduled incremental syncs, retried with back-off, clean shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from met_harvester.daemon.schedule import Schedule
from met_harvester.daemon.server import DaemonState, make_app, parse_listen
from met_harvester.datadir import DataDirLock
from met_harvester.db.connection import connect_sync
from met_harvester.metrics import HarvesterMetrics
from met_harvester.settings import HarvesterSettings

log = logging.getLogger("met_harvester.daemon")

SyncFn = Callable[..., Coroutine[Any, Any, Any]]

# Back-off after a failed run: 1 min, doubling, never longer than the schedule's interval.
RETRY_FIRST_S = 60.0
RETRY_MAX_S = 6 * 3600.0


def _default_sync() -> SyncFn:
    from met_harvester.sync import run_sync

    return run_sync


class Daemon:
    """Runs `sync` on a schedule until stopped; one instance per data dir (held by the lock)."""

    def __init__(
        self,
        settings: HarvesterSettings,
        schedule: Schedule,
        *,
        max_runs: int | None = None,
        sync_fn: SyncFn | None = None,
        retry_first_s: float = RETRY_FIRST_S,
    ) -> None:
        self.settings = settings
        self.schedule = schedule
        self.max_runs = max_runs
        self.sync_fn = sync_fn or _default_sync()
        self.retry_first_s = retry_first_s
        self.metrics = HarvesterMetrics()
        self.state = DaemonState(data_dir=settings.data_dir)
        self.stop_event = asyncio.Event()
        self._signals = 0

    # --- signals --------------------------------------------------------------------
    def _on_signal(self, signum: int) -> None:
        self._signals += 1
        if self._signals == 1:
            log.info(
                "signal received: finishing in-flight work",
                extra={"signal": signal.Signals(signum).name, "grace_s": self.settings.grace},
            )
            self.stop_event.set()
        else:
            # SQLite (WAL) is crash-safe and blobs are renamed into place atomically, so
            # leaving now loses at most the uncommitted batch, which the next run refetches.
            log.warning("second signal: exiting at once")
            os._exit(128 + signum)

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT: first one stops gracefully, a second exits at once."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)

    # --- one run ----------------------------------------------------------------------
    async def _run_once(self) -> bool:
        """One sync; True if it completed. Cancelled after the grace period on shutdown."""
        started = time.time()
        self.state.syncing = True
        task: asyncio.Task[Any] = asyncio.create_task(
            self.sync_fn(self.settings, metrics=self.metrics, stop_event=self.stop_event)
        )
        try:
            while not task.done():
                stop_wait = asyncio.create_task(self.stop_event.wait())
                await asyncio.wait({task, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
                stop_wait.cancel()
                if self.stop_event.is_set() and not task.done():
                    done, _ = await asyncio.wait({task}, timeout=self.settings.grace)
                    if not done:
                        log.warning(
                            "grace period over: cancelling the sync",
                            extra={"grace_s": self.settings.grace},
                        )
                        task.cancel()
                        await asyncio.gather(task, return_exceptions=True)
                        return False
            report = task.result()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # one failed run must not end the daemon
            self.state.runs_failed += 1
            self.state.last_error = f"{type(exc).__name__}: {exc}"
            log.error("sync run failed", extra={"error": self.state.last_error})
            return False
        finally:
            self.state.syncing = False
            self.metrics.sync_duration.observe(time.time() - started)
        completed = getattr(report, "completed", True) and not self.stop_event.is_set()
        if completed:
            self.state.runs_completed += 1
            self.state.last_error = None
            self.metrics.last_success.set(time.time())
            log.info("sync run completed", extra={"duration_s": round(time.time() - started, 2)})
        return bool(completed)

    async def _sleep_until(self, when: float) -> None:
        delay = max(0.0, when - time.time())
        self.state.next_run_at = when
        if delay:
            log.info(
                "next sync scheduled", extra={"at": datetime.fromtimestamp(when, UTC).isoformat()}
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop_event.wait(), timeout=delay)

    # --- the loop -------------------------------------------------------------------------
    async def run(self) -> int:
        """Run until stopped (or `max_runs` runs were made). Returns the exit code."""
        lock = DataDirLock(self.settings.data_dir, command="daemon")
        lock.acquire()  # raises LockHeldError naming the holder
        runner: web.AppRunner | None = None
        try:
            host, port = parse_listen(self.settings.listen)
            runner = web.AppRunner(make_app(self.state, self.metrics), access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, host, port)
            await site.start()
            log.info("endpoint listening", extra={"listen": f"{host}:{port}"})

            self.state.migrating = True
            await asyncio.to_thread(lambda: connect_sync(self.settings.data_dir).close())
            self.state.migrating = False

            runs = 0
            last_start: datetime | None = None
            retry_s = self.retry_first_s
            retry_pending = False
            while not self.stop_event.is_set():
                if not retry_pending:
                    next_at = self.schedule.next_run(datetime.now(UTC), last_start)
                    await self._sleep_until(next_at.timestamp())
                    if self.stop_event.is_set():
                        break
                last_start = datetime.now(UTC)
                ok = await self._run_once()
                runs += 1
                if self.max_runs is not None and runs >= self.max_runs:
                    break
                retry_pending = not ok
                if ok:
                    retry_s = self.retry_first_s
                    continue
                if self.stop_event.is_set():
                    break
                log.warning("retrying failed sync", extra={"in_s": retry_s})
                await self._sleep_until(time.time() + retry_s)
                cap = min(RETRY_MAX_S, self.schedule.interval_s or RETRY_MAX_S)
                retry_s = min(retry_s * 2, cap)
            return 0
        finally:
            if runner is not None:
                await runner.cleanup()
            lock.release()
            log.info("daemon stopped")
