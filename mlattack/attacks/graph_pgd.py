"""Label-graph PGD: PGD whose summed BCE leans towards the labels that usually come with those already shown.

The study's open question 3 asks whether label interdependencies can be used to show more labels. A multi-label
victim has learnt that labels co-occur (ML-GCN even builds its classifiers over a label graph), so a label that
usually appears with the ones an image already shows should be cheaper to turn on than one that never does. This
attack keeps PGD's steps and budget and changes only the loss: at every step, each label the target wants but the
prediction does not show yet gets the weight

    w_j = 1 + strength · (s_j - min_k s_k),   s_j = max over shown labels i of P(j | i)

(min over the labels still to turn on), every other label weight 1. A matrix without structure (all P equal)
gives every weight exactly 1, i.e. plain PGD. The weights are constants of the step (no gradient flows through
which labels are shown).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn

from mlattack.attacks.base import check_positive
from mlattack.attacks.iterative import IterativePlan
from mlattack.attacks.losses import clamped_probabilities
from mlattack.attacks.pgd import PGD
from mlattack.resources import find_config

MatrixSource = str | torch.Tensor | np.ndarray


def conditional_probabilities(
    cooccurrence: torch.Tensor | np.ndarray, label_counts: torch.Tensor | np.ndarray
) -> torch.Tensor:
    """P[i, j] = P(j | i) = M[i, j] / N[i] from training-label counts (rows of never-seen labels are zero)."""
    m = torch.as_tensor(np.asarray(cooccurrence, dtype=np.float64))
    n = torch.as_tensor(np.asarray(label_counts, dtype=np.float64))
    if m.ndim != 2 or m.shape[0] != m.shape[1] or n.shape != (m.shape[0],):
        raise ValueError(
            f"cooccurrence must be (C, C) and label_counts (C,), got {tuple(m.shape)} and {tuple(n.shape)}"
        )
    p = torch.where(n[:, None] > 0, m / n[:, None].clamp_min(1.0), torch.zeros_like(m))
    return p.float()


def graph_from_adjacency(adjacency: torch.Tensor) -> torch.Tensor:
    """ML-GCN's edges as a 0/1 matrix E[i, j] = [P(j | i) >= tau], i != j.

    The network keeps only the normalised adjacency D Aᵀ D of its re-weighted binary correlation matrix A
    (:mod:`mlattack.models.graph`); D is a positive diagonal, so A[i, j] > 0 exactly where the buffer's [j, i] is.
    """
    if adjacency.ndim != 2 or adjacency.shape[0] != adjacency.shape[1]:
        raise ValueError(f"adjacency must be a square (C, C) matrix, got shape {tuple(adjacency.shape)}")
    edges = (adjacency.detach().float().t() > 0).float()
    return edges.fill_diagonal_(0.0)


def graph_from_model(model: nn.Module) -> torch.Tensor:
    """The label graph of the first submodule with an ``adjacency`` tensor (ML-GCN, also inside a wrapper)."""
    for module in model.modules():
        adjacency = getattr(module, "adjacency", None)
        if isinstance(adjacency, torch.Tensor):
            return graph_from_adjacency(adjacency)
    raise ValueError(
        f"matrix='model' needs a network with an `adjacency` buffer (ML-GCN); {type(model).__name__} has none: "
        "give a (C, C) conditional probability matrix (file or tensor) or label statistics (.json)"
    )


def training_cooccurrence(data_config: Path) -> torch.Tensor:
    """P(j | i) counted on the training split of a data config (``configs/data/*.yaml``), for any model."""
    from mlattack.data.datamodule import MultiLabelDataModule  # the data layer only when a config asks for it

    spec = yaml.safe_load(data_config.read_text())
    if not isinstance(spec, dict):
        raise ValueError(f"matrix: {data_config} is not a data config (a mapping with `source`, ...)")
    stats = MultiLabelDataModule(**spec).label_stats("train")
    return conditional_probabilities(stats.cooccurrence_matrix(), stats.label_counts())


def load_matrix(source: MatrixSource) -> torch.Tensor:
    """A (C, C) matrix in [0, 1] from a tensor/array, a ``.npy`` / ``.pt`` file, a label-statistics ``.json``
    (:class:`mlattack.data.stats.LabelStats`) or a data config ``.yaml`` (co-occurrence counted on its training
    split), the last two turned into P(j | i)."""
    if isinstance(source, str):
        try:
            path = find_config(source)
        except FileNotFoundError:
            raise ValueError(
                f"matrix: no such file {source!r} (or give 'model' for ML-GCN's own graph)"
            ) from None
        if path.suffix in (".yaml", ".yml"):
            matrix = training_cooccurrence(path)
        elif path.suffix == ".json":
            stats = json.loads(path.read_text())
            matrix = conditional_probabilities(stats["cooccurrence"], stats["class_counts"])
        elif path.suffix == ".npy":
            matrix = torch.from_numpy(np.load(path))
        elif path.suffix == ".pt":
            matrix = torch.load(path, map_location="cpu", weights_only=True)
        else:
            raise ValueError(f"matrix: expected a .yaml, .json, .npy or .pt file, got {source!r}")
    else:
        matrix = torch.as_tensor(source)
    matrix = matrix.detach().float()
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"matrix must be a square (C, C) matrix, got shape {tuple(matrix.shape)}")
    if not bool(torch.isfinite(matrix).all()) or bool((matrix < 0).any()) or bool((matrix > 1).any()):
        raise ValueError("matrix must hold conditional probabilities P(j | i) in [0, 1]")
    return matrix


class GraphWeightedBCE:
    """The study's summed BCE with per-label weights from a (C, C) matrix P[i, j] = P(j | i); see the module
    docstring. ``matrix=None`` (not resolved yet) weighs every label 1."""

    def __init__(self, matrix: torch.Tensor | None, strength: float) -> None:
        self.matrix = matrix
        self.strength = strength

    def weights(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """(N, C) detached weights for the current logits."""
        shown = logits.detach() >= 0
        ones = torch.ones_like(logits, dtype=torch.float32)
        if self.matrix is None:
            return ones
        p = self.matrix.to(logits.device)
        if p.shape[0] != logits.shape[1]:
            raise ValueError(f"matrix is for {p.shape[0]} labels, the model gives {logits.shape[1]}")
        # s[n, j] = max over shown i of P(j | i); 0 where nothing is shown
        s = torch.where(shown[:, :, None], p[None], torch.zeros((), device=p.device)).amax(dim=1)
        todo = ~shown & (target > 0.5)
        floor = torch.where(todo, s, torch.full_like(s, float("inf"))).amin(dim=1, keepdim=True)
        return torch.where(todo, 1.0 + self.strength * (s - floor), ones)

    def __call__(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        w = self.weights(logits, target)
        p = clamped_probabilities(logits)
        t = target.to(p.dtype)
        # the same expression as summed_bce, times w (exactly 1.0 for a structureless matrix)
        return -(w * (t * p.log() + (1.0 - t) * (1.0 - p).log())).sum(dim=1)


class LabelGraphPGD(PGD):
    r"""PGD (L∞) towards a multi-label target with a loss weighted by label co-occurrence.

    Same start, steps, projection and budget as :class:`PGD`; the loss is :class:`GraphWeightedBCE`: each label
    still to turn on weighs ``1 + strength · (s_j - min s)``, s_j the largest P(j | i) over the labels i the
    image shows at that step. A uniform matrix gives bit-identical images to PGD with the same settings.

    Distance measure: Linf

    Arguments:
        eps, nb_iter, eps_iter, rand_init, generator: see :class:`PGD` (defaults: the study's 0.3, 30, 0.001).
        matrix: where P(j | i) comes from: ``"model"`` (default) reads ML-GCN's label graph from the attacked
            network (0/1 edges P(j | i) >= tau); for any model, a data config (``configs/data/voc2007.yaml``:
            counted on its training split) or a label-statistics ``.json``; or a ``.npy`` / ``.pt`` file or a
            tensor / array holding a (C, C) matrix in [0, 1].
        strength (float): how much more a label with P = 1 weighs than the least likely one (default 16.0; 0 is
            PGD). On the demo 16 and 64 did about equally well, 4 clearly less.
        early_stop, autocast: see :class:`mlattack.attacks.base.Attack`.

    Shape:
        - images: (N, 3, H, W) in [0, 1]; target: (N, C) multi-hot; output: (N, 3, H, W) in [0, 1].

    Example::

        >>> attack = LabelGraphPGD(eps=0.3, matrix="configs/data/voc2007.yaml")
        >>> adv = attack(model, images, torch.ones(len(images), num_labels))
    """

    norm = "linf"

    def __init__(
        self,
        eps: float = PGD.PAPER_EPS,
        nb_iter: int = 30,
        eps_iter: float = 0.001,
        rand_init: bool = True,
        generator: torch.Generator | None = None,
        matrix: MatrixSource = "model",
        strength: float = 16.0,
        early_stop: bool = False,
        autocast: str | None = None,
    ) -> None:
        strength = check_positive("strength", strength, allow_zero=True)
        given = None if isinstance(matrix, str) and matrix == "model" else load_matrix(matrix)
        super().__init__(eps, nb_iter, eps_iter, rand_init, generator, GraphWeightedBCE(given, strength),
                         early_stop, autocast)  # fmt: skip
        self.matrix = matrix if isinstance(matrix, str) else "tensor"
        self.strength = strength

    def iterative_plan(self, model: nn.Module) -> IterativePlan:
        self.loss_fn.strength = self.strength  # a sweep may have set the attribute
        if self.matrix == "model":  # the graph of the network under attack, read at every call
            self.loss_fn.matrix = graph_from_model(model)
        return super().iterative_plan(model)
