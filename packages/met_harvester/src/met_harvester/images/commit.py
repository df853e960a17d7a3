"""Group commit: validated downloads become blobs in small groups, one thread hop per group.

A download hands its complete temp file to `GroupCommitter.commit` and waits. The first blob of
a group starts a short timer; the group closes when it holds `max_group` blobs or the timer
fires (`max_wait` seconds, a few ms), and `BlobStore.commit_group` then runs in a worker thread:
data fsync, link, folder fsync for every blob, in that order, sharing the waits and the folder
fsyncs of the group. Several groups may be in flight at once. Only then does each waiting
download get its answer, so a database row is never written before its blob is durable.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor

from met_harvester.images.blobstore import BlobStore, PendingBlob

MAX_WAIT = 0.002

_Waiting = tuple[PendingBlob, "asyncio.Future[bool]"]


class GroupCommitter:
    """Commits temp files into `store` in groups (see the module docstring).

    Args:
        store: the blob store.
        executor: threads for the fsyncs (None: asyncio's default).
        max_group: blobs per group at most.
        max_wait: seconds the first blob of a group waits for others at most.
    """

    def __init__(
        self,
        store: BlobStore,
        *,
        executor: Executor | None = None,
        max_group: int = 8,
        max_wait: float = MAX_WAIT,
    ) -> None:
        self.store = store
        self.executor = executor
        self.max_group = max(1, max_group)
        self.max_wait = max_wait
        self._pending: list[_Waiting] = []
        self._timer: asyncio.TimerHandle | None = None
        self._in_flight: set[asyncio.Task[None]] = set()

    async def commit(self, blob: PendingBlob) -> bool:
        """Commit one blob with the others of its group; from this call on, the committer owns
        `blob` (its fd and temp name). Returns True for a new blob, False for a duplicate.

        Raises:
            ValueError, OSError: what kept this blob out of the store (see `commit_group`).
        """
        loop = asyncio.get_running_loop()
        done: asyncio.Future[bool] = loop.create_future()
        self._pending.append((blob, done))
        if len(self._pending) >= self.max_group:
            self._close_group()
        elif self._timer is None:
            self._timer = loop.call_later(self.max_wait, self._close_group)
        return await done

    async def aclose(self) -> None:
        """Commit what is still waiting and wait for every group in flight."""
        self._close_group()
        while self._in_flight:
            await asyncio.gather(*self._in_flight, return_exceptions=True)

    def _close_group(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        group, self._pending = self._pending, []
        if group:
            task = asyncio.get_running_loop().create_task(self._run(group))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)

    async def _run(self, group: list[_Waiting]) -> None:
        blobs = [blob for blob, _ in group]
        loop = asyncio.get_running_loop()
        try:
            results = await asyncio.shield(
                loop.run_in_executor(self.executor, self.store.commit_group, blobs)
            )
        except asyncio.CancelledError:  # the pass is ending; the thread still finishes the group
            for _, done in group:
                done.cancel()
            raise
        except Exception as exc:  # handed to every waiter of the group
            results = [exc] * len(group)
        for (_, done), result in zip(group, results, strict=True):
            if done.done():  # the waiting download was cancelled
                continue
            if isinstance(result, Exception):
                done.set_exception(result)
            else:
                done.set_result(result)
