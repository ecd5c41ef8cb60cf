"""VOC "difficult" labels in the training loss (positive | negative | ignore) on a generated VOC2007 tree."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader

from mlattack.data.datamodule import MultiLabelDataModule
from mlattack.data.voc import VOC_CLASSES
from mlattack.models.losses import LIWLoss, MultiLabelSoftMarginLoss
from mlattack.models.mlliw import MLLIW
from mlattack.models.module import MultiLabelClassifier
from tests.data.fixtures import VOC2007_SPLITS, VOC_LABELS, make_voc

S = 16
TRAIN_IDS = VOC2007_SPLITS["train"]  # 000002 has car present and person difficult


@pytest.fixture(autouse=True)
def empty_torch_home(tmp_path, monkeypatch):
    """No cached ImageNet weights: the trunks are random, as in the other model tests."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))


@pytest.fixture
def voc_batch(tmp_path):
    dm = MultiLabelDataModule("voc2007", str(make_voc(tmp_path)), image_size=S, batch_size=8, num_workers=0,
                              augment=False)  # fmt: skip
    return dm, next(iter(DataLoader(dm.dataset("train"), batch_size=8)))


def fixture_labels(value: int) -> torch.Tensor:
    """(3, 20) mask of the training images' entries whose devkit label is ``value`` (1, 0 or -1)."""
    return torch.tensor([[VOC_LABELS[i].get(c, -1) == value for c in VOC_CLASSES] for i in TRAIN_IDS])


def soft_margin_by_hand(logits: torch.Tensor, targets: torch.Tensor, keep: torch.Tensor) -> float:
    """Mean over images of the mean over kept labels of -[y log s + (1 - y) log(1 - s)]."""
    per_image = []
    for row_x, row_y, row_k in zip(logits.tolist(), targets.tolist(), keep.tolist(), strict=True):
        terms = [
            -(y * math.log(1 / (1 + math.exp(-x))) + (1 - y) * math.log(1 - 1 / (1 + math.exp(-x))))
            for x, y, k in zip(row_x, row_y, row_k, strict=True)
            if k
        ]
        if terms:
            per_image.append(sum(terms) / len(terms))
    return sum(per_image) / len(per_image)


def module(difficult: str, loss: nn.Module | None = None) -> MultiLabelClassifier:
    torch.manual_seed(0)
    return MultiLabelClassifier(MLLIW(20, backbone="tiny"), loss=loss, difficult=difficult).double()


def test_the_fixture_batch_carries_the_difficult_mask_beside_a_01_target(voc_batch):
    _, batch = voc_batch
    order = [TRAIN_IDS[i] for i in batch["index"].tolist()]
    assert order == TRAIN_IDS  # no shuffling: rows are in dataset order
    assert torch.equal(batch["difficult"], fixture_labels(0))
    assert torch.equal(batch["target"], fixture_labels(1).float())  # difficult entries are 0 in the target
    assert batch["difficult"].sum() == 1 and batch["image"].min() >= 0 and batch["image"].max() <= 1


def test_soft_margin_loss_per_option_on_the_fixture(voc_batch):
    _, batch = voc_batch
    logits = torch.randn(3, 20, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    pos, dif = fixture_labels(1).double(), fixture_labels(0)
    everything = torch.ones(3, 20, dtype=torch.bool)
    want = {
        "negative": soft_margin_by_hand(logits, pos, everything),
        "positive": soft_margin_by_hand(logits, pos + dif.double(), everything),  # reference ML-GCN: 0 -> 1
        "ignore": soft_margin_by_hand(logits, pos, ~dif),
    }
    got = {
        mode: module(mode).compute_loss(logits, batch["target"].double(), batch["difficult"]).item()
        for mode in want
    }
    for mode in want:
        assert got[mode] == pytest.approx(want[mode], rel=1e-12), mode
    assert len({round(v, 9) for v in got.values()}) == 3  # the three options really differ here
    # without any difficult label the default loss is torch's own
    torch.testing.assert_close(
        MultiLabelSoftMarginLoss()(logits, pos),
        nn.MultiLabelSoftMarginLoss()(logits, pos),
        rtol=1e-12,
        atol=0,
    )


def test_liw_loss_per_option_on_the_fixture(voc_batch):
    _, batch = voc_batch
    logits = torch.randn(3, 20, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    pos, dif = fixture_labels(1), fixture_labels(0)
    liw = LIWLoss()
    want = {
        "negative": liw(logits, pos.double()),
        "positive": liw(logits, (pos | dif).double()),
        "ignore": liw(logits, pos.double(), ignore=dif),
    }
    got = {mode: module(mode, LIWLoss()).compute_loss(logits, batch["target"].double(), batch["difficult"])
           for mode in want}  # fmt: skip
    for mode in want:
        torch.testing.assert_close(got[mode], want[mode], rtol=1e-12, atol=0)
    # ignore removes (000002, person) from both sides: it is neither a positive nor a negative any more
    assert len({round(v.item(), 9) for v in got.values()}) == 3


def test_training_step_uses_the_option(tmp_path, voc_batch):
    # One real optimisation step through Lightning: the logged training loss is the option's loss on the batch
    # (the frozen-trunk MLLIW gives the same logits in train and eval mode, so it can be computed beforehand).
    dm, batch = voc_batch
    logged = {}
    for mode in ("positive", "negative", "ignore"):
        m = module(mode, LIWLoss()).float()
        with torch.no_grad():
            want = m.compute_loss(m(batch["image"]), batch["target"], batch["difficult"]).item()
        trainer = pl.Trainer(fast_dev_run=1, accelerator="cpu", logger=False, enable_progress_bar=False,
                             enable_model_summary=False, default_root_dir=tmp_path)  # fmt: skip
        trainer.fit(m, datamodule=dm)
        logged[mode] = trainer.callback_metrics["train/loss"].item()
        assert logged[mode] == pytest.approx(want, rel=1e-6), mode
    assert abs(logged["positive"] - logged["ignore"]) > 1e-5 * logged["ignore"]  # same start, different loss
    assert abs(logged["negative"] - logged["ignore"]) > 1e-5 * logged["ignore"]


def test_bad_difficult_values_are_refused():
    with pytest.raises(
        ValueError, match=r"model\.difficult must be one of \['positive', 'negative', 'ignore'\]"
    ):
        module("skip")
    with pytest.raises(ValueError, match=r"model\.difficult='ignore'.*MultiLabelSoftMarginLoss"):
        module("ignore", nn.MultiLabelSoftMarginLoss())  # torch's loss cannot leave entries out
    module("positive", nn.MultiLabelSoftMarginLoss())  # ...but is fine for the other two options


def test_masked_soft_margin_loss_with_everything_ignored_is_zero_and_differentiable():
    logits = torch.randn(2, 3, requires_grad=True)
    loss = MultiLabelSoftMarginLoss()(logits, torch.ones(2, 3), ignore=torch.ones(2, 3, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(logits.grad, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="logits and targets"):
        MultiLabelSoftMarginLoss()(torch.zeros(2, 3), torch.zeros(2, 4))
