"""Continuous batching for ML-CW: a fixed number of samples in flight, each on its own binary-search schedule.

Batch-independent ML-CW (:attr:`~mlattack.attacks.mlcw.MLCW.batch_independent`: the corrected variant, or any
variant with ``batch_stall_check`` off) already runs every sample of a batch on its own schedule: its own ``c`` and
bracket, Adam state, stall checks and best image (a :class:`~mlattack.attacks.mlcw.CWRows` row), a sample whose
search step ends restarting from the clean image while the others carry on. This scheduler keeps ``slots`` such
rows in every forward pass: when a sample is done (all ``binary_search_steps`` spent; with ``early_stop``, it shows
the target) it leaves with its best image, and the next queued sample enters with fresh state
(:meth:`~mlattack.attacks.mlcw.MLCW.start`). Each iteration is :meth:`~mlattack.attacks.mlcw.MLCW.iterate`, the one
``MLCW.perturb`` runs, so each result equals ``perturb``'s for the sample alone (up to float rounding of a different
batch size). The reference variant's stall check sums the loss over the batch and couples its samples on purpose;
it is refused here and runs group by group (:mod:`mlattack.evaluation.chunks`).

ML-CW has no random start: ``seed`` and ``keys`` are taken for the schedulers' common signature only (``keys``
are still checked to name one sample each).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields

import torch
from torch import Tensor, nn

from mlattack.attacks.base import Attack, AttackResult, frozen_eval
from mlattack.attacks.continuous import check_queue
from mlattack.attacks.mlcw_steps import CWRows

# ``attack`` is an MLCW, which declares this scheduler (MLCW.fast_scheduler): typed as the base class so that
# nothing here imports the attack's module back


def _like(v: Tensor, fmt: torch.memory_format) -> Tensor:
    """cat can return NCHW tensors; a channels_last input stays channels_last (the fast copy's convolutions run
    NHWC, an NCHW input would cost a reorder per layer)."""
    return v.contiguous(memory_format=fmt) if v.ndim == 4 else v


def _cat(a: CWRows, b: CWRows, fmt: torch.memory_format) -> CWRows:
    return CWRows(*(_like(torch.cat([getattr(a, f.name), getattr(b, f.name)]), fmt) for f in fields(CWRows)))


def run_mlcw_continuous(
    attack: Attack,
    model: nn.Module,
    images: Tensor,
    target: Tensor,
    keys: Sequence[int],
    seed: int,
    slots: int,
    diagnostics: bool = False,
) -> AttackResult:
    """Attack every sample of ``images`` with batch-independent ML-CW, at most ``slots`` in flight; results in
    input order.

    Per sample as :meth:`MLCW.perturb` reports it: the best image over all search steps, the iterations (forward
    passes) spent, and ``reached``/``loss`` from the best image's kept logits. A sample whose every search step
    ended at its first stall check keeps the clean image; ``diagnostics`` judges it with one more forward pass, as
    ``perturb`` does (without: ``reached`` False and ``loss`` NaN for it). ``attack.last_const_bounds`` is set as
    ``perturb`` sets it (each sample's final bracket on ``c``, input order). ``seed`` and ``keys``: see the module
    docstring. Raises ``ValueError`` for an attack whose quirks couple the samples of a batch.
    """
    if not attack.batch_independent:
        raise ValueError(
            "ML-CW with batch_stall_check couples the samples of a batch; it runs group by group, not continuously"
        )
    check_queue(images, target, keys, slots)
    images = images.detach().float()
    target = target.detach().to(device=images.device, dtype=torch.float32)
    n, dev = images.shape[0], images.device
    nhwc = images.is_contiguous(memory_format=torch.channels_last) and not images.is_contiguous()
    fmt = torch.channels_last if nhwc else torch.contiguous_format
    out_adv = torch.empty_like(images)
    iterations = torch.zeros(n, dtype=torch.long, device=dev)
    reached = torch.zeros(n, dtype=torch.bool, device=dev)
    loss = torch.full((n,), float("nan"), device=dev)
    lower = torch.zeros(n, dtype=torch.float64, device=dev)
    upper = torch.zeros(n, dtype=torch.float64, device=dev)
    live: CWRows | None = None
    ids: list[int] = []  # row j of ``live`` is sample ids[j]
    queued = 0

    def retire(js: list[int]) -> None:
        """Write the results of the done rows ``js`` and drop them from the flight."""
        nonlocal live, ids
        j = torch.tensor(js, dtype=torch.long, device=dev)
        r = torch.tensor([ids[i] for i in js], dtype=torch.long, device=dev)
        s = live.apply(lambda v: v[j])  # advanced indexing keeps channels_last
        res = attack.outcome(model, s, diagnostics)
        out_adv[r], iterations[r], reached[r], loss[r] = (
            res.adv,
            res.iterations,
            res.reached,
            res.loss.float(),
        )
        lower[r], upper[r] = s.lower, s.upper
        gone = set(js)
        kept = [i for i in range(len(ids)) if i not in gone]
        ids = [ids[i] for i in kept]
        keep = torch.tensor(kept, dtype=torch.long, device=dev)
        live = live.apply(lambda v: v[keep])

    with frozen_eval(model):
        while True:
            room = min(slots - len(ids), n - queued)
            if room > 0:  # refill the batch from the queue; a new sample starts its first search step
                new = attack.start(images[queued : queued + room], target[queued : queued + room])
                live = new.apply(lambda v: _like(v, fmt)) if live is None else _cat(live, new, fmt)
                ids += list(range(queued, queued + room))
                queued += room
            if not ids:
                break
            attack.iterate(model, live, torch.arange(len(ids), device=dev))
            done = live.done.nonzero().flatten().tolist()  # the host sync of the step
            if done:
                retire(done)
    attack.last_const_bounds = (lower, upper)
    return AttackResult(adv=out_adv, iterations=iterations, reached=reached, loss=loss)
