"""Slows training down so a test can kill ``mlattack fit`` at a chosen moment (between checkpoints) reliably."""

import time

from pytorch_lightning.callbacks import Callback


class SlowTraining(Callback):
    """Sleep ``seconds`` after every training batch."""

    def __init__(self, seconds: float = 1.0) -> None:
        self.seconds = seconds

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        time.sleep(self.seconds)
