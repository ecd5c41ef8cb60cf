"""What a preprocessing defence costs on clean images: the defended model's validation mAP, the same metric as
``mlattack fit`` logs (macro AP, difficult labels skipped), so the robustness report can set the two side by side
(logged as :data:`mlattack.tracking.record.CLEAN_MAP_METRIC`)."""

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
