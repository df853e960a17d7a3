"""Exact evaluation under DDP: every validation, test and predict sample on exactly one rank.

PyTorch's ``DistributedSampler`` pads the dataset to a multiple of the world size by repeating
samples, so metrics gathered over the ranks count up to ``world - 1`` samples twice. Evaluation
uses Lightning's ``UnrepeatedDistributedSampler`` instead: rank ``r`` takes ``r::world`` and the
ranks may differ by one sample. That is safe because nothing in an evaluation step synchronises
(``self.log(..., sync_dist=True)`` reduces at epoch end, weighted by batch size), and the epoch-end
gathers of torchmetrics accept uneven shares. Every rank must have at least one sample, though:
a rank with no batch skips the loop and its epoch-end hooks, and the others would wait for it.
"""

from __future__ import annotations

from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import Dataset, Sampler


def exact_eval_sampler(dataset: Dataset, stage: str, world: int, rank: int) -> Sampler | None:
    """The evaluation sampler of ``rank`` in ``world`` (None in a single process).

    Raises:
        ValueError: when a validation or test split has fewer samples than processes.
    """
    if world <= 1:
        return None
    size = len(dataset)  # type: ignore[arg-type]
    if stage in ("val", "test") and 0 < size < world:
        raise ValueError(
            f"the {stage} split has {size} sample(s), fewer than the {world} DDP processes; "
            "evaluate it with fewer devices or give the split more objects"
        )
    return UnrepeatedDistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=False)
