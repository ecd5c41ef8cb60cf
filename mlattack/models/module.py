"""The one multi-label LightningModule: any network (image in [0,1] -> logits) plus its loss and optimiser.

The network is injected (``net``: ML-GCN, ML-LIW, ...), so the same module trains both models of the study and the
attack loop can take ``module.net`` — the bare logits model — without knowing which one it is.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterable
from typing import Any, Literal

import pytorch_lightning as pl
import torch
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MultilabelAveragePrecision,
    MultilabelF1Score,
    MultilabelHammingDistance,
    MultilabelRankingLoss,
)

from mlattack.models.adversarial import AdversarialTraining
from mlattack.models.losses import MultiLabelSoftMarginLoss

log = logging.getLogger(__name__)

#: the constructor arguments that are objects (config dicts under LightningCLI)
OBJECT_ARGUMENTS = ("net", "loss", "optimizer", "lr_scheduler", "adversarial")

OptimizerCallable = Callable[[Iterable], torch.optim.Optimizer]
SchedulerCallable = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]

#: the label value torchmetrics skips: VOC "difficult" labels are excluded from every metric
IGNORE = -1

#: how the training (and validation) loss treats VOC "difficult" labels; metrics always skip them
DIFFICULT_MODES = ("positive", "negative", "ignore")
Difficult = Literal["positive", "negative", "ignore"]


def check_difficult(difficult: str, loss: nn.Module) -> str:
    """Validate ``difficult`` and that the loss can leave entries out when it is ``ignore``."""
    if difficult not in DIFFICULT_MODES:
        raise ValueError(f"model.difficult must be one of {list(DIFFICULT_MODES)}, got {difficult!r}")
    if difficult == "ignore" and "ignore" not in inspect.signature(loss.forward).parameters:
        raise ValueError(
            f"model.difficult='ignore' needs a loss whose forward takes an `ignore` mask; {type(loss).__name__} "
            "does not (use mlattack.models.losses.MultiLabelSoftMarginLoss or LIWLoss)"
        )
    return difficult


def multilabel_metrics(num_labels: int, prefix: str) -> MetricCollection:
    """Hamming distance, ranking loss, F1 (micro, macro) and mAP (macro AP), skipping difficult labels."""
    kw = {"num_labels": num_labels, "ignore_index": IGNORE}
    return MetricCollection(
        {
            "mAP": MultilabelAveragePrecision(average="macro", **kw),
            "hamming": MultilabelHammingDistance(**kw),
            "ranking_loss": MultilabelRankingLoss(**kw),
            "f1_micro": MultilabelF1Score(average="micro", **kw),
            "f1_macro": MultilabelF1Score(average="macro", **kw),
        },
        prefix=prefix,
    )


def sgd_default(params: Iterable) -> torch.optim.Optimizer:
    """ML-GCN's optimiser (docs/PROTOCOL.md): SGD, momentum 0.9, weight decay 1e-4."""
    return torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=1e-4)


class MultiLabelClassifier(pl.LightningModule):
    """Train and evaluate a multi-label network.

    Arguments:
        net: the network; input (N, 3, H, W) in [0, 1], output (N, C) logits. Networks that model the label graph
            (``set_label_graph``) receive the training split's co-occurrence before fitting.
        loss: training loss on (logits, multi-hot targets); default ``MultiLabelSoftMarginLoss`` (ML-GCN's; the
            one in :mod:`mlattack.models.losses`, which equals torch's and can also leave entries out).
        difficult: what the loss makes of VOC "difficult" labels (the batch's ``difficult`` mask; the targets
            hold them as 0): ``positive`` (ML-GCN's reference maps them to 1), ``negative`` (as the attack
            protocol sees them) or ``ignore`` (left out of the loss, ML-LIW's reference). Used for the training
            and the validation/test loss; the metrics skip difficult labels whatever this says.
        backbone_lr_scale: multiplies the optimiser's learning rate for the pretrained trunk (0.1 in ML-GCN), when
            the network splits its parameters into groups (``parameter_groups``).
        optimizer: optimiser factory applied to the network's parameter groups (jsonargparse ``class_path``); its
            ``lr`` (``model.optimizer.init_args.lr``) is the one learning-rate setting.
        lr_scheduler: optional scheduler factory (e.g. ``MultiStepLR`` with ML-GCN's step epochs).
        adversarial: train on adversarial images made on the fly by an inner attack (PGD-AT or multi-label
            TRADES; :class:`~mlattack.models.adversarial.AdversarialTraining`); ``None``: ordinary training.
    """

    def __init__(
        self,
        net: nn.Module,
        loss: nn.Module | None = None,
        backbone_lr_scale: float = 0.1,
        optimizer: OptimizerCallable = sgd_default,
        lr_scheduler: SchedulerCallable | None = None,
        difficult: Difficult = "negative",
        adversarial: AdversarialTraining | None = None,
    ) -> None:
        super().__init__()
        # Under LightningCLI the hparams are the parsed config (class paths + init args: plain data), which is what
        # lets `--ckpt_path` and `load_from_checkpoint` rebuild the network; built by hand they would be the objects
        # themselves, which a checkpoint must not pickle. The optimiser factory tells which case this is.
        self.save_hyperparameters("optimizer", logger=False)
        from_config = isinstance(self.hparams["optimizer"], (str, dict))
        self.remove_ignored_hparams(["optimizer"])
        self.save_hyperparameters(ignore=[] if from_config else list(OBJECT_ARGUMENTS))
        self.net = net
        self.loss_fn = loss if loss is not None else MultiLabelSoftMarginLoss()
        self.difficult = check_difficult(difficult, self.loss_fn)
        if not backbone_lr_scale >= 0:  # also refuses NaN
            raise ValueError(f"model.backbone_lr_scale must be >= 0, got {backbone_lr_scale}")
        self.backbone_lr_scale = float(backbone_lr_scale)
        self.optimizer_factory, self.scheduler_factory = optimizer, lr_scheduler
        self.adversarial = adversarial
        c = self.num_classes
        self.val_metrics = multilabel_metrics(c, "val/")
        self.test_metrics = multilabel_metrics(c, "test/")

    @property
    def num_classes(self) -> int:
        n = getattr(self.net, "num_classes", None)
        if n is None:
            raise ValueError("model.net must expose `num_classes` (the number of labels it predicts)")
        return int(n)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    # -- set-up ---------------------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        try:
            dm = getattr(self.trainer, "datamodule", None)
        except RuntimeError:  # not attached to a Trainer (set up by hand): no data to check against
            dm = None
        if dm is None:
            return
        if getattr(dm, "num_classes", self.num_classes) != self.num_classes:
            raise ValueError(
                f"model predicts {self.num_classes} labels but data source {dm.source!r} has {dm.num_classes}"
            )
        if stage == "fit" and hasattr(self.net, "set_label_graph"):
            stats = dm.label_stats("train")
            self.net.set_label_graph(
                torch.as_tensor(stats.cooccurrence_matrix()), torch.as_tensor(stats.label_counts())
            )

    def configure_optimizers(self) -> Any:
        """The optimiser over the network's parameter groups, at the optimiser's own ``lr``.

        The groups give relative rates (1 for the head, ``backbone_lr_scale`` for the trunk); they are scaled by
        the ``lr`` the optimiser was configured with, so there is one learning-rate setting, not two.
        """
        if hasattr(self.net, "parameter_groups"):
            groups = self.net.parameter_groups(1.0, self.backbone_lr_scale)
        else:
            groups = [{"params": [p for p in self.net.parameters() if p.requires_grad], "lr": 1.0}]
        scales = [float(g.pop("lr", 1.0)) for g in groups]
        opt = self.optimizer_factory(groups)
        base = opt.defaults.get("lr")
        if base is None:
            raise ValueError(
                f"model.optimizer: {type(opt).__name__} has no `lr`; expected a torch.optim optimiser"
            )
        for group, scale in zip(opt.param_groups, scales, strict=True):
            group["lr"] = base * scale
        if self.scheduler_factory is None:
            return opt
        return {
            "optimizer": opt,
            "lr_scheduler": {"scheduler": self.scheduler_factory(opt), "interval": "epoch"},
        }

    # -- steps ----------------------------------------------------------------------------------------------------
    def compute_loss(
        self, logits: torch.Tensor, target: torch.Tensor, difficult: torch.Tensor
    ) -> torch.Tensor:
        """The loss with difficult labels treated as ``self.difficult`` says (targets themselves stay {0, 1})."""
        if self.difficult == "positive":
            return self.loss_fn(logits, torch.where(difficult.bool(), torch.ones_like(target), target))
        if self.difficult == "ignore":
            return self.loss_fn(logits, target, ignore=difficult.bool())
        return self.loss_fn(logits, target)

    def registry_tags(self) -> dict[str, str]:
        """Tags the registered model version carries beyond the network's own: the adversarial training's."""
        return self.adversarial.tags() if self.adversarial is not None else {}

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        if self.adversarial is not None:
            parts = self.adversarial.loss(self, batch)
            n = len(batch["image"])
            for name, value in parts.items():
                if name != "loss":
                    self.log(
                        f"train/{name}_loss",
                        value,
                        on_step=False,
                        on_epoch=True,
                        batch_size=n,
                        sync_dist=True,
                    )
            self.log("train/loss", parts["loss"], on_step=False, on_epoch=True, prog_bar=True, batch_size=n,
                     sync_dist=True)  # fmt: skip
            return parts["loss"]
        logits = self(batch["image"])
        loss = self.compute_loss(logits, batch["target"], batch["difficult"])
        self.log(
            "train/loss",
            loss,
            on_step=False,
            on_epoch=True,
            prog_bar=True,
            batch_size=len(logits),
            sync_dist=True,
        )
        return loss

    def _eval_step(self, batch: dict, metrics: MetricCollection, prefix: str) -> None:
        logits = self(batch["image"])
        target = batch["target"]
        loss = self.compute_loss(logits, target, batch["difficult"])
        labels = target.long().masked_fill(batch["difficult"].bool(), IGNORE)
        metrics.update(torch.sigmoid(logits.float()), labels)
        self.log(f"{prefix}loss", loss, on_epoch=True, batch_size=len(logits), sync_dist=True)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, self.val_metrics, "val/")

    def on_validation_epoch_end(self) -> None:
        values = self.val_metrics.compute()
        self.log("val/mAP", values.pop("val/mAP"), prog_bar=True)
        self.log_dict(values)
        self.val_metrics.reset()

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, self.test_metrics, "test/")

    def on_test_epoch_end(self) -> None:
        self.log_dict(self.test_metrics.compute())
        self.test_metrics.reset()

    def predict_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return torch.sigmoid(self(batch["image"]).float())
