"""A callback that fails mid-training, to check what a crash leaves in MLflow."""

from pytorch_lightning.callbacks import Callback


class CrashDuringTraining(Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        raise RuntimeError("simulated crash during training")
