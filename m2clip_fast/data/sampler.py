"""Which samples each rank reads in an epoch."""
from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import Sampler

from ..distributed import Runtime


class EpochSampler(Sampler[int]):
    """This rank's share of a (shuffled) epoch, deterministic in ``(seed, epoch)``, that can start
    part-way through (to resume mid-epoch). Training pads the epoch so every rank gets as many samples."""

    def __init__(self, size: int, runtime: Runtime, shuffle: bool, seed: int = 0, pad: bool = True) -> None:
        self.size, self.rank, self.world = size, runtime.rank, runtime.world_size
        self.shuffle, self.seed, self.pad = shuffle, seed, pad
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def _indices(self) -> list[int]:
        if self.shuffle:
            order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist()
        else:
            order = list(range(self.size))
        if self.pad:
            order += order[: (-len(order)) % self.world]
        return order[self.rank :: self.world]

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices()[self.start :])

    def __len__(self) -> int:
        return len(self._indices()) - self.start
