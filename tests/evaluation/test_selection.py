"""Sample selection (docs/PROTOCOL.md): dataset order, exact match on every label, >= 1 positive, difficult = negative."""

import logging

import pytest
import torch

from mlattack.evaluation.selection import cached_selection, correct_mask, select_correct_samples
from tests.evaluation.toy import LinearColourNet, ToyColours


def test_correct_mask_rules():
    logits = torch.tensor([[1.0, -1.0], [1.0, 1.0], [-1.0, -1.0], [0.0, -2.0]])
    targets = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
    # exact match / one wrong label / no positive label / logit 0 means probability 0.5 -> positive
    assert correct_mask(logits, targets).tolist() == [True, False, False, True]
    # the study's ML-LIW driver keeps only samples with at least two positive labels
    two = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    assert correct_mask(torch.tensor([[2.0, 2.0], [2.0, -2.0]]), two, min_positive=2).tolist() == [
        True,
        False,
    ]


def test_selection_keeps_first_n_correct_in_dataset_order():
    ds = ToyColours(n=24)
    assert ds.pred[3].sum() >= 1 and ds.difficult[3].any()
    expected = [
        i
        for i in range(24)
        if i not in (1, 2, 3) and ds.targets[i].sum() >= 1 and torch.equal(ds.pred[i], ds.targets[i])
    ]
    assert len(expected) >= 8
    sel = select_correct_samples(LinearColourNet(), ds, num_samples=6, batch_size=4)
    assert sel.indices == expected[:6]
    assert sel.ids == [f"img{i:03d}" for i in expected[:6]]
    assert sel.avg_labels == pytest.approx(float(ds.targets[expected[:6]].sum(1).mean()))
    assert sel.scanned < 24  # stops reading once enough samples are found
    head = sel.head(3, ds.targets)
    assert head.indices == expected[:3]
    assert head.avg_labels == pytest.approx(float(ds.targets[expected[:3]].sum(1).mean()))


def test_asking_for_more_than_exist_returns_all_with_a_warning(caplog):
    caplog.set_level(
        logging.INFO, logger="mlattack.evaluation.selection"
    )  # the attack command tells the user
    ds = ToyColours(n=24)
    sel = select_correct_samples(LinearColourNet(), ds, num_samples=500, batch_size=8)
    assert len(sel.indices) < 24 and sel.scanned == 24
    assert "only" in caplog.text and "500" in caplog.text
    with pytest.raises(ValueError, match="num_samples"):
        select_correct_samples(LinearColourNet(), ds, num_samples=0)


def test_selection_cache_is_reused(tmp_path):
    ds = ToyColours(n=24)
    calls = []

    def compute():
        calls.append(1)
        return select_correct_samples(LinearColourNet(), ds, 5)

    a = cached_selection(tmp_path, "k", compute)
    b = cached_selection(tmp_path, "k", compute)
    assert a == b and len(calls) == 1
