"""Label-graph PGD: weights that follow the co-occurrence matrix, plain PGD for a structureless matrix (bit for
bit), the matrix sources (ML-GCN's graph, label statistics, files), batch independence and budget."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mlattack.attacks import PGD, LabelGraphPGD
from mlattack.attacks.graph_pgd import (
    GraphWeightedBCE,
    conditional_probabilities,
    graph_from_model,
    load_matrix,
)
from mlattack.attacks.losses import summed_bce
from mlattack.models.mlgcn import MLGCN
from tests.attacks.models import assert_batch_equals_one_by_one, make_cnn, make_images, make_linear

P = torch.tensor(  # P[i, j] = P(j | i)
    [
        [1.0, 0.8, 0.1, 0.0],
        [0.2, 1.0, 0.5, 0.3],
        [0.0, 0.9, 1.0, 0.4],
        [0.6, 0.1, 0.2, 1.0],
    ]
)


def test_weights_follow_the_matrix():
    logits = torch.tensor(
        [
            [2.0, -1.0, -3.0, -2.0],  # shows 0: P(j | 0) for 1, 2, 3 = 0.8, 0.1, 0.0
            [1.0, 0.5, -1.0, -1.0],  # shows 0 and 1: max(P(2 | 0), P(2 | 1)) = 0.5, max(P(3 | .)) = 0.3
            [-1.0, -1.0, -1.0, -1.0],  # shows nothing: no evidence, all equal
            [2.0, -1.0, -1.0, -1.0],  # shows 0, the target hides 2: only 1 and 3 are to turn on
        ]
    )
    target = torch.tensor([[1.0, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 0, 1]])
    w = GraphWeightedBCE(P, strength=2.0).weights(logits, target)
    expected = torch.tensor(
        [
            [1.0, 1 + 2 * 0.8, 1 + 2 * 0.1, 1.0],  # the least likely label keeps weight 1
            [1.0, 1.0, 1 + 2 * (0.5 - 0.3), 1.0],  # shown labels keep weight 1
            [1.0, 1.0, 1.0, 1.0],
            [1.0, 1 + 2 * 0.8, 1.0, 1.0],
        ]
    )
    torch.testing.assert_close(w, expected)
    loss = GraphWeightedBCE(P, strength=2.0)(logits, target)
    p = torch.sigmoid(logits).clamp(1e-6, 1 - 1e-6)
    per_label = -(target * p.log() + (1 - target) * (1 - p).log())
    torch.testing.assert_close(loss, (expected * per_label).sum(1))


def _pgd_pair(matrix, strength=4.0, **kw):
    settings = {"eps": 0.03, "nb_iter": 8, "eps_iter": 0.005} | kw
    graph = LabelGraphPGD(
        matrix=matrix, strength=strength, generator=torch.Generator().manual_seed(0), **settings
    )
    plain = PGD(generator=torch.Generator().manual_seed(0), **settings)
    return graph, plain


@pytest.mark.parametrize("early_stop", [False, True])
@pytest.mark.parametrize("matrix", ["uniform", "uniform_with_diagonal", "zeros"])
def test_structureless_matrix_is_plain_pgd_bit_for_bit(matrix, early_stop):
    m = {
        "uniform": torch.full((5, 5), 0.3),
        "uniform_with_diagonal": torch.full((5, 5), 0.3).fill_diagonal_(1.0),
        "zeros": torch.zeros(5, 5),
    }[matrix]
    model, images = make_cnn(5), make_images(6, 8, seed=1)
    target = (torch.rand(6, 5, generator=torch.Generator().manual_seed(2)) > 0.3).float()
    graph, plain = _pgd_pair(m, early_stop=early_stop)
    a, b = graph.run(model, images, target), plain.run(model, images, target)
    assert (
        torch.equal(a.adv, b.adv) and torch.equal(a.loss, b.loss) and torch.equal(a.iterations, b.iterations)
    )


def test_strength_zero_is_plain_pgd_and_a_structured_matrix_is_not():
    model, images, target = make_cnn(4), make_images(6, 8, seed=1), torch.ones(6, 4)
    graph, plain = _pgd_pair(P, strength=0.0)
    assert torch.equal(graph(model, images, target), plain(model, images, target))
    graph, plain = _pgd_pair(P, strength=4.0)
    assert not torch.equal(graph(model, images, target), plain(model, images, target))


def test_likely_labels_gain_more_than_under_plain_pgd():
    """A linear model whose images all show label 0 and no other: P(1 | 0) = 0.8, P(3 | 0) = 0, so label 1 gains
    more logit than under PGD and label 3 less (logit gains of a linear model add up over the steps)."""
    model = make_linear(4, 8)
    with torch.no_grad():
        model.linear.bias.copy_(torch.tensor([3.0, -1.0, -1.0, -1.0]))
    images = make_images(8, 8, seed=3)
    clean = model(images).detach()
    assert ((clean >= 0) == torch.tensor([True, False, False, False])).all()
    target = torch.ones(8, 4)
    graph, plain = _pgd_pair(P, strength=8.0, rand_init=False, eps=0.02, nb_iter=4)
    adv_graph, adv_plain = graph(model, images, target), plain(model, images, target)
    assert ((model(adv_graph) >= 0) == (clean >= 0)).all()  # the shown set, hence the weights, stayed put
    gain_graph, gain_plain = model(adv_graph).detach() - clean, model(adv_plain).detach() - clean
    assert (gain_graph[:, 1] > gain_plain[:, 1]).all()
    assert (gain_graph[:, 3] < gain_plain[:, 3]).all()


@pytest.mark.parametrize("early_stop", [False, True])
def test_batch_equals_one_by_one(early_stop):
    model, images = make_linear(4, 8), make_images(5, 8, seed=1)
    target = (torch.rand(5, 4, generator=torch.Generator().manual_seed(4)) > 0.3).float()
    attack = LabelGraphPGD(0.3, 12, 0.03, rand_init=False, matrix=P, early_stop=early_stop)
    batch, ones = assert_batch_equals_one_by_one(attack, model, images, target)
    if early_stop:
        assert batch.reached.any() and (batch.iterations < 12).any()


def test_budget_and_pixel_range():
    model, images = make_cnn(4), make_images(6, 8, seed=1)
    images[0] = 1.0
    attack = LabelGraphPGD(0.02, 8, 0.005, matrix=P, generator=torch.Generator().manual_seed(0))
    res = attack.run(model, images, torch.ones(6, 4))
    assert res.adv.min() >= 0 and res.adv.max() <= 1
    assert (res.adv - images).abs().max() <= 0.02 + 1e-6
    target = torch.ones(6, 4)
    assert (summed_bce(model(res.adv), target) < summed_bce(model(images), target)).all()


COUNTS = np.array([10, 20, 10, 6])
COOCCURRENCE = np.array([[10, 8, 1, 0], [8, 20, 10, 6], [1, 10, 10, 0], [0, 6, 0, 6]])


def test_matrix_from_mlgcn_graph():
    net = MLGCN(4, backbone="tiny", hidden_dim=8, tau=0.4)
    net.set_label_graph(COOCCURRENCE, COUNTS)
    # P(j | i) >= 0.4 off the diagonal: 0 -> 1 (0.8), 1 -> 0 (0.4), 1 -> 2 (0.5), 2 -> 1 (1.0), 3 -> 1 (1.0)
    expected = torch.tensor([[0.0, 1, 0, 0], [1, 0, 1, 0], [0, 1, 0, 0], [0, 1, 0, 0]])
    assert torch.equal(graph_from_model(net), expected)
    assert torch.equal(graph_from_model(torch.nn.Sequential(net)), expected)  # also inside a wrapper
    attack = LabelGraphPGD(0.02, 2, 0.01, matrix="model", generator=torch.Generator().manual_seed(0))
    attack(net, make_images(2, 16), torch.ones(2, 4))
    assert torch.equal(attack.loss_fn.matrix, expected)
    with pytest.raises(ValueError, match="matrix"):
        attack(make_cnn(4), make_images(2, 8), torch.ones(2, 4))


def test_matrix_sources(tmp_path):
    p = conditional_probabilities(COOCCURRENCE, COUNTS)
    torch.testing.assert_close(p[1], torch.tensor([0.4, 1.0, 0.5, 0.3]))
    stats = {"cooccurrence": COOCCURRENCE.tolist(), "class_counts": COUNTS.tolist(), "num_images": 30}
    (tmp_path / "stats.json").write_text(json.dumps(stats))
    np.save(tmp_path / "p.npy", p.numpy())
    torch.save(p, tmp_path / "p.pt")
    for source in ("stats.json", "p.npy", "p.pt"):
        torch.testing.assert_close(load_matrix(str(tmp_path / source)), p)
    attack = LabelGraphPGD(matrix=str(tmp_path / "stats.json"))
    torch.testing.assert_close(attack.loss_fn.matrix, p)
    assert attack.hyperparameters()["matrix"] == str(tmp_path / "stats.json")


def test_matrix_counted_on_the_training_split_of_a_data_config(tmp_path):
    from mlattack.data.datamodule import MultiLabelDataModule

    spec = {
        "source": "synthetic",
        "image_size": 16,
        "seed": 5,
        "options": {"num_classes": 6, "num_samples": 60},
    }
    (tmp_path / "data.yaml").write_text(json.dumps(spec))  # JSON is YAML
    y = MultiLabelDataModule(**spec).dataset("train").targets.double()
    expected = (y.T @ y) / y.sum(0)[:, None]  # P(j | i) = #(i and j) / #i
    torch.testing.assert_close(load_matrix(str(tmp_path / "data.yaml")), expected.float())


@pytest.mark.parametrize(
    "kwargs,argument",
    [
        ({"matrix": "missing.npy"}, "matrix"),
        ({"matrix": torch.ones(3, 4)}, "matrix"),
        ({"matrix": torch.full((3, 3), 2.0)}, "matrix"),
        ({"matrix": torch.full((3, 3), float("nan"))}, "matrix"),
        ({"strength": -1.0}, "strength"),
        ({"eps_iter": 0.0}, "eps_iter"),
    ],
)
def test_bad_values_name_the_argument(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        LabelGraphPGD(**kwargs)


def test_config():
    from mlattack.evaluation.runner import load_attack_config

    attack = load_attack_config("configs/attack/graph-pgd.yaml")
    assert isinstance(attack, LabelGraphPGD)
    assert (attack.eps, attack.nb_iter, attack.eps_iter, attack.matrix, attack.strength) == (
        0.3,
        30,
        0.001,
        "model",
        16.0,
    )
    demo = load_attack_config("configs/attack/graph-pgd-synthetic.yaml")
    assert demo.matrix == "configs/data/synthetic.yaml" and demo.loss_fn.matrix.shape == (20, 20)
