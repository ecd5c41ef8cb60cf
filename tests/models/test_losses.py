import itertools
import math

import pytest
import torch

from mlattack.models.losses import LIWLoss


def logits_for(probs: list[list[float]]) -> torch.Tensor:
    p = torch.tensor(probs, dtype=torch.float64)
    return torch.log(p / (1 - p))


def test_liw_loss_hand_example():
    # 2 images x 3 labels, sigmoid outputs s and targets y:
    #   s = [[0.8, 0.2, 0.5],    y = [[1, 0, 0],
    #        [0.5, 0.8, 0.2]]         [1, 1, 0]]
    # instance-wise (per image, mean over (pos, neg) label pairs, summed over images):
    #   image 0: pos {0}, neg {1, 2}: (e^-(0.8-0.2) + e^-(0.8-0.5)) / 2 = (e^-0.6 + e^-0.3) / 2
    #   image 1: pos {0, 1}, neg {2}: (e^-(0.5-0.2) + e^-(0.8-0.2)) / 2 = (e^-0.3 + e^-0.6) / 2
    #   -> e^-0.6 + e^-0.3
    # label-wise (per label, mean over (pos, neg) image pairs, summed over labels):
    #   label 0: both images positive -> skipped
    #   label 1: pos {image 1}, neg {image 0}: e^-(0.8-0.2) = e^-0.6
    #   label 2: no positive image -> skipped
    # loss = 0.5 * (e^-0.6 + e^-0.3) + e^-0.6 ~= 1.19363
    logits = logits_for([[0.8, 0.2, 0.5], [0.5, 0.8, 0.2]])
    targets = torch.tensor([[1.0, 0, 0], [1, 1, 0]], dtype=torch.float64)
    expected = 0.5 * (math.exp(-0.6) + math.exp(-0.3)) + math.exp(-0.6)
    assert LIWLoss()(logits, targets).item() == pytest.approx(expected, rel=1e-9)


def test_liw_loss_skips_rows_and_labels_with_an_empty_side():
    # Adding an image whose labels are all positive adds nothing instance-wise, and for the label-wise part it is
    # one more positive image for labels 0 and 1 and one more for label 2 (which then gets a pair).
    # s_new = [0.9, 0.9, 0.9]:
    #   label 0: pos {0, 1, new}, neg {} -> still skipped
    #   label 1: pos {1, new}, neg {0}: (e^-(0.8-0.2) + e^-(0.9-0.2)) / 2
    #   label 2: pos {new}, neg {0, 1}: (e^-(0.9-0.5) + e^-(0.9-0.2)) / 2
    logits = logits_for([[0.8, 0.2, 0.5], [0.5, 0.8, 0.2], [0.9, 0.9, 0.9]])
    targets = torch.tensor([[1.0, 0, 0], [1, 1, 0], [1, 1, 1]], dtype=torch.float64)
    e = math.exp
    instance = e(-0.6) + e(-0.3)
    label = (e(-0.6) + e(-0.7)) / 2 + (e(-0.4) + e(-0.7)) / 2
    assert LIWLoss()(logits, targets).item() == pytest.approx(0.5 * instance + label, rel=1e-9)


def test_liw_loss_without_any_pair_is_zero_and_differentiable():
    logits = torch.randn(3, 4, requires_grad=True)
    loss = LIWLoss()(logits, torch.zeros(3, 4))  # no positive anywhere: every row and label skipped
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros(3, 4))


def test_liw_loss_ignore_mask_removes_entries_from_both_sides():
    # Ignoring (image 0, label 2) in the hand example removes the pair (0, 2) of image 0 and changes nothing
    # label-wise (label 2 had no positive image): image 0 -> e^-0.6 alone.
    logits = logits_for([[0.8, 0.2, 0.5], [0.5, 0.8, 0.2]])
    targets = torch.tensor([[1.0, 0, 0], [1, 1, 0]], dtype=torch.float64)
    ignore = torch.zeros(2, 3, dtype=torch.bool)
    ignore[0, 2] = True
    e = math.exp
    expected = 0.5 * (e(-0.6) + (e(-0.3) + e(-0.6)) / 2) + e(-0.6)
    assert LIWLoss()(logits, targets, ignore).item() == pytest.approx(expected, rel=1e-9)


def brute_force_liw(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """The definition with explicit loops over pairs, for comparison with the vectorised loss."""
    s = torch.sigmoid(logits).tolist()
    y = targets.tolist()

    def part(rows_s, rows_y):
        total = 0.0
        for sr, yr in zip(rows_s, rows_y, strict=True):
            pos = [k for k, v in enumerate(yr) if v == 1]
            neg = [k for k, v in enumerate(yr) if v == 0]
            if pos and neg:
                total += sum(math.exp(-(sr[i] - sr[j])) for i, j in itertools.product(pos, neg)) / (
                    len(pos) * len(neg)
                )
        return total

    transpose = lambda m: [list(c) for c in zip(*m, strict=True)]  # noqa: E731
    return 0.5 * part(s, y) + part(transpose(s), transpose(y))


def test_liw_loss_matches_pairwise_definition_on_random_batch():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(7, 5, generator=g, dtype=torch.float64) * 3
    targets = (torch.rand(7, 5, generator=g) < 0.4).double()
    targets[0] = 1  # an all-positive image
    targets[:, 1] = 0  # a label without positives
    assert LIWLoss()(logits, targets).item() == pytest.approx(brute_force_liw(logits, targets), rel=1e-9)


def test_liw_loss_gradient_ranks_positives_up():
    logits = torch.zeros(2, 3, requires_grad=True)
    targets = torch.tensor([[1.0, 0, 0], [0, 1, 1]])
    LIWLoss()(logits, targets).backward()
    assert (logits.grad[targets == 1] < 0).all() and (logits.grad[targets == 0] > 0).all()


def test_liw_loss_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="logits and targets"):
        LIWLoss()(torch.zeros(2, 3), torch.zeros(2, 4))
