"""One writer per resumed fit. Two ``mlattack fit --ckpt_path <run>/checkpoints/last.ckpt`` at once would train the
same run twice, log every epoch twice into one MLflow run and overwrite each other's checkpoints. The second one
must stop before it touches anything: before Lightning's fit starts, since a fit that fails inside ``trainer.fit``
marks its MLflow run FAILED, which here is the first command's live run."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
from lightning_fabric.utilities.rank_zero import rank_zero_only
from pytorch_lightning.callbacks import Callback

from mlattack.rundir.lock import RunLock


class ResumeLock(Callback):
    """Holds the lock of a resumed fit's checkpoint folder until the fit ends, however it ends."""

    def __init__(self, lock: RunLock) -> None:
        self.lock = lock

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.lock.release()

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self.lock.release()


def hold_resume_lock(trainer: pl.Trainer, ckpt_path: str | None, run_id: str | None) -> None:
    """Lock the folder of the checkpoint a fit resumes from (raises :class:`~mlattack.rundir.lock.RunBusy`, one
    line, when another live process holds it); the lock is released when the fit ends. A new fit has a run of its
    own and needs none; only the process of global rank 0 locks (the other DDP ranks are its children)."""
    if not ckpt_path or not run_id or rank_zero_only.rank != 0:
        return
    folder = Path(ckpt_path).resolve().parent
    lock = RunLock(folder / "writer.lock", what=f"fit run {run_id} ({folder})").acquire()
    trainer.callbacks.append(ResumeLock(lock))
