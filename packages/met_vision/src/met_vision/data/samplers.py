"""Samplers that shard correctly under DDP.

`ClassBalancedSampler` is a `DistributedSampler` subclass, so Lightning leaves it in place
(`use_distributed_sampler` only wraps samplers that are not already distributed): each rank takes
a disjoint slice (`rank::num_replicas`) of one seeded global draw, which changes every epoch
through `set_epoch` (Lightning calls it).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset, DistributedSampler


def distributed_context(num_replicas: int | None, rank: int | None) -> tuple[int, int]:
    """(world size, rank): explicit values, else the initialised process group, else (1, 0)."""
    if num_replicas is None or rank is None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            num_replicas = (
                torch.distributed.get_world_size() if num_replicas is None else num_replicas
            )
            rank = torch.distributed.get_rank() if rank is None else rank
        else:
            num_replicas = 1 if num_replicas is None else num_replicas
            rank = 0 if rank is None else rank
    if not 0 <= rank < num_replicas:
        raise ValueError(f"rank {rank} is outside [0, {num_replicas})")
    return num_replicas, rank


def class_balanced_weights(targets: Sequence[Any], task: str) -> torch.Tensor:
    """Per-sample weights giving every class about the same share of draws.

    multiclass: 1 / count(class). multilabel: 1 / count of the sample's rarest label; a sample
    with no positive label gets 1 / (number of such samples).
    """
    if task == "multiclass":
        counts = Counter(int(t) for t in targets)
        return torch.tensor([1.0 / counts[int(t)] for t in targets], dtype=torch.double)
    label_counts = Counter(int(i) for t in targets for i in t)
    empty = sum(1 for t in targets if len(t) == 0) or 1
    weights = [
        max(1.0 / label_counts[int(i)] for i in t) if len(t) else 1.0 / empty for t in targets
    ]
    return torch.tensor(weights, dtype=torch.double)


class ClassBalancedSampler(DistributedSampler):
    """Weighted sampling with replacement, one disjoint shard of each epoch's draw per rank.

    Args:
        dataset: the dataset (only its length is used).
        weights: one non-negative weight per sample (see `class_balanced_weights`).
        num_samples: draws per epoch over all ranks (default: len(dataset)).
        num_replicas, rank: the DDP world; default from the process group, else a single process.
        seed: base seed; the draw of epoch e uses seed + e, the same on every rank.
    """

    def __init__(
        self,
        dataset: Dataset,
        weights: torch.Tensor,
        *,
        num_samples: int | None = None,
        num_replicas: int | None = None,
        rank: int | None = None,
        seed: int = 0,
    ) -> None:
        world, rank = distributed_context(num_replicas, rank)
        super().__init__(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed)
        if len(weights) != len(dataset):  # type: ignore[arg-type]
            raise ValueError(f"{len(weights)} weights for {len(dataset)} samples")  # type: ignore[arg-type]
        self.weights = torch.as_tensor(weights, dtype=torch.double)
        total = num_samples if num_samples is not None else len(self.weights)
        self.num_samples = math.ceil(total / self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas

    def global_draw(self) -> list[int]:
        """This epoch's draw over all ranks (identical on every rank)."""
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        draw = torch.multinomial(
            self.weights, self.total_size, replacement=True, generator=generator
        )
        return draw.tolist()

    def __iter__(self) -> Iterator[int]:
        return iter(self.global_draw()[self.rank : self.total_size : self.num_replicas])

    def __len__(self) -> int:
        return self.num_samples
