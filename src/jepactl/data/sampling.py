"""Deterministic, resumable, sharded batch order.

Every micro-batch ``b`` (counted from the start of the run, across epochs) is a pure function
of (seed, b, rank): the epoch permutation comes from ``seed + epoch``, each sample's
augmentation seed and each batch's mask seed from the same numbers. So a run resumed at micro-
batch ``b`` sees exactly the data, crops and masks it would have seen without the interruption,
however many DataLoader workers there are.

Sharding: every epoch's order is cut between the ranks so that the ranks together see every
index once per epoch, with the order padded (only in the epoch's last batch) to fill whole
batches on every rank; nothing is dropped (``BatchPlan``).
"""

from __future__ import annotations

from typing import Iterator

import torch

from jepactl.errors import DataError

SampleKey = tuple[int, int, int]  # (dataset index, sample seed, batch seed)


def mix_seed(*parts: int) -> int:
    """Return a 63-bit seed mixing ``parts`` (splitmix64), stable across runs and platforms."""
    value = 0x9E3779B97F4A7C15
    for part in parts:
        value = (value ^ (int(part) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        value ^= value >> 31
    return value & 0x7FFFFFFFFFFFFFFF


class BatchPlan:
    """Infinite iterable of micro-batches of ``SampleKey`` for one process.

    An epoch is a seeded permutation of the ``size`` indices, padded by wrapping around to its
    start up to a multiple of ``world * batch_size`` (as ``DistributedSampler`` pads). Rank r
    takes positions ``r, r + world, ...`` of it, so one epoch's batches over all ranks hold
    every index once, plus ``padding`` (< ``world * batch_size``) repeats of the epoch's first
    indices, all in each rank's last batch of the epoch; global step s covers positions
    ``[s * world * batch_size, (s + 1) * world * batch_size)`` of the padded order. The
    padding repeats an index, not a sample: the repeat gets its own augmentation seed.

    ``start`` is the number of micro-batches this process has already consumed.
    """

    def __init__(
        self,
        size: int,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world: int = 1,
        start: int = 0,
        shuffle: bool = True,
    ) -> None:
        if size < batch_size * world:
            raise DataError(
                f"the data has {size} samples, fewer than one batch of {batch_size} per process "
                f"({world} process(es)); lower train.batch_size"
            )
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is not in [0, {world})")
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.rank, self.world, self.start, self.shuffle = rank, world, start, shuffle
        step = batch_size * world
        self.batches_per_epoch = -(-size // step)
        self.padding = self.batches_per_epoch * step - size  # < step <= size

    def epoch_order(self, epoch: int) -> torch.Tensor:
        """Return epoch ``epoch``'s padded order of indices, the same on every rank."""
        order = (
            torch.randperm(
                self.size, generator=torch.Generator().manual_seed(mix_seed(self.seed, epoch))
            )
            if self.shuffle
            else torch.arange(self.size)
        )
        return torch.cat([order, order[: self.padding]]) if self.padding else order

    def __iter__(self) -> Iterator[list[SampleKey]]:
        batch = self.start
        while True:
            epoch, within = divmod(batch, self.batches_per_epoch)
            mine = self.epoch_order(epoch)[self.rank :: self.world]
            for position in range(within, self.batches_per_epoch):
                chunk = mine[position * self.batch_size : (position + 1) * self.batch_size].tolist()
                batch_seed = mix_seed(self.seed, batch, self.rank, 1)
                yield [
                    (i, mix_seed(self.seed, batch, self.rank, j, 2), batch_seed)
                    for j, i in enumerate(chunk)
                ]
                batch += 1
