"""The victim's clean validation mAP, logged on every attack run: the network as attacked (behind its preprocessing
defence, if any), scored as ``mlattack fit`` scores it (macro AP, difficult labels skipped). The robustness report
sets it beside the labels shown, for every victim, whether or not it came from the model registry (a ``.ckpt``
victim has no registered score), and shows what a defence costs on clean images."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader

from mlattack.models.module import IGNORE, multilabel_metrics


@torch.no_grad()
def clean_val_map(net: nn.Module, data, device: torch.device) -> float:
    """Validation mAP of ``net`` (eval mode) on ``data``'s val split."""
    metrics = multilabel_metrics(int(net.num_classes), "").to(device)
    loader = DataLoader(data.dataset("val"), batch_size=data.eval_batch_size, num_workers=data.num_workers)
    net = net.to(device).eval()
    for batch in loader:
        logits = net(batch["image"].to(device)).float()
        labels = batch["target"].long().masked_fill(batch["difficult"].bool(), IGNORE).to(device)
        metrics.update(torch.sigmoid(logits), labels)
    return float(metrics.compute()["mAP"])
