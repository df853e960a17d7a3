"""The changed window of an incremental pass, worked through in an order that survives restarts.

An incremental pass asks `/objects?metadataDate=D` for the ids changed since the last completed
pass and fetches them in ascending id order. How far that is committed (`done_through`, the
largest id below which every changed id is stored) is kept in `harvester_state` in the same
transaction as each batch, so a pass killed half-way resumes after `done_through` instead of
starting over. The pass that finishes the window records, as `sync_runs.changes_from`, the
start of the pass that *began* it, so changes made meanwhile are asked for again next time.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import aiosqlite

from met_harvester.db.state import delete_state, get_state, set_state

WINDOW_KEY = "sync.changed_window"
"""harvester_state key of the window in progress (JSON)."""


@dataclass
class ChangedWindow:
    """A changed window in progress: its `metadataDate`, when it began, how far it is done."""

    metadata_date: str
    began_at: str
    done_through: int | None = None


async def load_window(db: aiosqlite.Connection) -> ChangedWindow | None:
    """The window in progress, or None."""
    text = await get_state(db, WINDOW_KEY)
    if not text:
        return None
    try:
        return ChangedWindow(**json.loads(text))
    except (ValueError, TypeError):
        return None


async def save_window(db: aiosqlite.Connection, window: ChangedWindow) -> None:
    """Keep the window in progress. No commit."""
    await set_state(db, WINDOW_KEY, json.dumps(asdict(window)))


async def clear_window(db: aiosqlite.Connection) -> None:
    """The window is done (a full or incremental pass completed). No commit."""
    await delete_state(db, WINDOW_KEY)


def resume(
    window: ChangedWindow | None, metadata_date: str, began_at: str, ids: Sequence[int]
) -> tuple[ChangedWindow, list[int]]:
    """The window for this pass and the changed ids still to do, ascending.

    The window in progress is resumed when it asked for the same `metadataDate`; otherwise a
    new one begins now (`began_at`).
    """
    ordered = sorted(set(ids))
    if window is None or window.metadata_date != metadata_date:
        return ChangedWindow(metadata_date, began_at), ordered
    if window.done_through is None:
        return window, ordered
    return window, [i for i in ordered if i > window.done_through]


class WindowCursor:
    """Moves `done_through` as the window's ids (in their ascending order) are committed."""

    def __init__(self, ids: Sequence[int]) -> None:
        self._ids = list(ids)
        self._members = set(self._ids)
        self._done: set[int] = set()
        self._pos = 0

    def advance(self, committed: Iterable[int]) -> int | None:
        """Note committed ids; the new `done_through`, or None if it did not move."""
        self._done.update(i for i in committed if i in self._members)
        moved = False
        while self._pos < len(self._ids) and self._ids[self._pos] in self._done:
            self._done.discard(self._ids[self._pos])
            self._pos += 1
            moved = True
        return self._ids[self._pos - 1] if moved else None

    async def save(self, db: aiosqlite.Connection, committed: Iterable[int]) -> None:
        """Advance and store `done_through` in the batch's transaction. No commit."""
        through = self.advance(committed)
        if through is None:
            return
        window = await load_window(db)
        if window is not None:
            window.done_through = through
            await save_window(db, window)
