"""How the selection is cut into attack batches and driven through a Trainer test pass.

A batch is a group of ``batch_size`` consecutive selection positions (the study's ``adv_batch_size``), whole on one
DDP rank, so the batches are the same whatever the number of ranks and whether the run was resumed.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from mlattack.evaluation.callback import AttackCallback, AttackTarget
from mlattack.evaluation.chunks import loader_batch
from mlattack.evaluation.progress import AttackProgress
from mlattack.evaluation.selection import SelectedSamples, Selection
from mlattack.evaluation.settings import AttackSettings


class RankSlice(torch.utils.data.Sampler[int]):
    """The positions of whole groups ``g = rank, rank + world, ...`` of ``group`` consecutive positions.

    A group is the attack batch (the study's ``adv_batch_size``): keeping it whole on one rank keeps the batches
    the same under DDP, which matters for the reference variants that couple the samples of a batch on purpose.
    No padding (Lightning's DistributedSampler would repeat samples to even out ranks and count them twice).
    """

    def __init__(self, length: int, group: int = 1) -> None:
        self.length, self.group = int(length), max(1, int(group))

    def _share(self) -> list[int]:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return group_share(
                self.length, self.group, torch.distributed.get_rank(), torch.distributed.get_world_size()
            )
        return group_share(self.length, self.group, 0, 1)

    def __iter__(self):
        return iter(self._share())

    def __len__(self) -> int:
        return len(self._share())


def group_share(length: int, group: int, rank: int, world: int) -> list[int]:
    """Positions of groups ``rank, rank + world, ...`` of ``group`` consecutive positions out of ``length``."""
    starts = range(rank * group, length, world * group)
    return [p for s in starts for p in range(s, min(s + group, length))]


def attack_pass(
    net: torch.nn.Module,
    jobs: list,
    selection: Selection,
    dataset,
    data,
    settings: AttackSettings,
    progress_bar: bool = True,
    callbacks: list[pl.Callback] | None = None,
) -> pl.Trainer:
    """The Trainer test pass that drives AttackCallback over the selected samples (each DDP rank: its share of
    whole batches). ``progress_bar``: one bar per attack (:mod:`~mlattack.evaluation.progress`) instead of
    Lightning's batch counter."""
    s = settings
    callback = AttackCallback(jobs, data.num_classes, dataset.class_names, s)
    progress = [AttackProgress(jobs)] if progress_bar else []
    samples = SelectedSamples(dataset, selection)
    chunk = loader_batch(s.batch_size, s.fast)  # fast mode: several attack batches, refilled continuously
    loader = DataLoader(
        samples,
        batch_size=chunk,
        sampler=RankSlice(len(samples), chunk),
        num_workers=data.num_workers,
    )
    trainer = pl.Trainer(
        accelerator=s.accelerator,
        devices=s.devices,
        strategy=s.strategy,
        num_nodes=s.num_nodes,
        logger=False,
        callbacks=[callback, *progress, *(callbacks or [])],
        inference_mode=False,
        use_distributed_sampler=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.test(AttackTarget(net), dataloaders=loader, verbose=False)
    return trainer
