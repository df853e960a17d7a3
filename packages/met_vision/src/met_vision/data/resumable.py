"""A training DataLoader that resumes mid-epoch where the checkpoint left off.

`MetDataModule.state_dict` (saved in every checkpoint) records the epoch and, for a checkpoint
taken in the middle of an epoch (a preempted job's `hpc_ckpt`, a step-based checkpoint), the
batches of that epoch already trained on. On resume the data module builds its training loader
with `skip_batches`: the first iteration drops those index batches at the batch sampler, so
nothing is read or decoded for them, and the resumed epoch sees exactly the batches an
uninterrupted run would have seen next (the sampler's order is a function of seed and epoch).

The data module does this itself because Lightning's own loader-state restore comes too late
here: `configure_optimizers` asks for `estimated_stepping_batches`, which builds the training
loader before the loops are restored. The loader still has `state_dict`/`load_state_dict`, so
Lightning treats it as resumable (and does not warn); `load_state_dict` has nothing left to do.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from torch.utils.data import DataLoader, Sampler


class _SkipBatches(Sampler[list[int]]):
    """The batches of `batch_sampler` after the first `skip`."""

    def __init__(self, batch_sampler: Any, skip: int) -> None:
        self.batch_sampler, self.skip = batch_sampler, skip

    def __iter__(self) -> Iterator[list[int]]:
        for i, batch in enumerate(self.batch_sampler):
            if i >= self.skip:
                yield batch

    def __len__(self) -> int:
        return max(0, len(self.batch_sampler) - self.skip)


class ResumableLoader(DataLoader):
    """`DataLoader` whose first iteration skips `skip_batches` batches (see the module
    docstring).

    Args:
        *args, **kwargs: DataLoader arguments.
        skip_batches: batches of the current epoch already trained on.
    """

    def __init__(self, *args: Any, skip_batches: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._skip = int(skip_batches)

    def state_dict(self) -> dict[str, Any]:
        """Nothing: the data module's state holds the position."""
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Nothing to restore (the data module already set `skip_batches`)."""

    def __iter__(self) -> Any:
        skip, self._skip = self._skip, 0
        if skip <= 0:
            return super().__iter__()
        rest = DataLoader(
            self.dataset,
            batch_sampler=_SkipBatches(self.batch_sampler, skip),
            num_workers=self.num_workers,
            collate_fn=self.collate_fn,
            pin_memory=self.pin_memory,
            worker_init_fn=self.worker_init_fn,
            generator=self.generator,
        )
        return iter(rest)
