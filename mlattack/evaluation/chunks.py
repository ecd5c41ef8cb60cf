"""How one loader batch of selected samples is attacked: continuously in fast mode, in the study's groups otherwise.

Paper mode hands the callback one group of ``batch_size`` consecutive selection positions per loader batch, and the
attack runs on that group as the study's loop did (one global seed per group for randomised attacks). Fast mode hands
it a *chunk* of :data:`FAST_CHUNK_BATCHES` such groups; the iterative gradient attacks then run through the
continuous scheduler (:func:`mlattack.attacks.continuous.run_continuous`), ML-APGD and batch-independent ML-CW
(the corrected variant) through their own (:func:`mlattack.attacks.apgd_continuous.run_apgd_continuous`,
:func:`mlattack.attacks.mlcw_continuous.run_mlcw_continuous`), with ``batch_size`` samples in flight, so early stop
(and an ML-CW sample whose binary search ends) frees slots that the next samples fill, and the batch only drains at
the end of each chunk (of each restart round for APGD). Their random starts come from per-sample generators seeded
from ``(seed, position)``, so a configured ``generator`` is not used (ML-CW has none). Attacks no scheduler drives
(ML-DP, MLA-LP, and ML-CW whose batch stall check couples its samples: the reference variant) run on the chunk's
groups one by one, exactly as in one group per loader batch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial

import torch
from torch import nn

from mlattack.attacks.base import Attack, AttackResult, FastScheduler

log = logging.getLogger(__name__)

#: fast mode's loader batch, in attack batches: the scheduler's queue. Larger chunks drain less often (the batch
#: shrinks only in a chunk's last samples) but hold more images in memory (8 x 10 at 448²: 190 MB).
FAST_CHUNK_BATCHES = 8


def loader_batch(batch_size: int, fast: bool) -> int:
    """Selection positions per loader batch (and per DDP rank group)."""
    return batch_size * FAST_CHUNK_BATCHES if fast else batch_size


def continuous_runner(attack: Attack) -> FastScheduler | None:
    """The scheduler that drives ``attack`` continuously in fast mode, as the attack declares it
    (:meth:`~mlattack.attacks.base.Attack.fast_scheduler`), or None: the attack runs group by group."""
    return attack.fast_scheduler()


def runs_continuously(attack: Attack, fast: bool) -> bool:
    """Fast mode drives the iterative gradient attacks, ML-APGD and batch-independent ML-CW continuously; their
    results are then per sample."""
    return fast and continuous_runner(attack) is not None


def attack_chunk(
    name: str,
    attack: Attack,
    model: nn.Module,
    images: torch.Tensor,
    target: torch.Tensor,
    positions: list[int],
    seed: int,
    batch_size: int | None,
    fast: bool,
) -> tuple[AttackResult, list[str]]:
    """Attack the samples at selection ``positions``; returns the results (``diagnostics=False``) and, per sample,
    the error that made its attack fail ("" if none: e.g. a solver giving up fails its group, the run goes on).

    ``batch_size``: the attack batch (slots in flight in fast mode); ``None``: all of ``images`` is one batch."""
    runner = continuous_runner(attack) if fast else None
    if runner is not None:
        call = partial(runner, attack, model, images, target, positions, seed, batch_size or len(images))
        return _guarded(name, call, images, positions)
    parts, errors = [], []
    groups: dict[int, list[int]] = {}
    for k, p in enumerate(positions):  # the study's batches: consecutive groups of batch_size positions
        groups.setdefault(p // batch_size if batch_size else 0, []).append(k)
    for rows in groups.values():
        x, t = images, target
        if len(groups) > 1:
            idx = torch.tensor(rows, device=images.device)
            x, t = images.index_select(0, idx), target.index_select(0, idx)
        # one seed per group: resumed and whole runs draw the same starts
        torch.manual_seed(seed * 1_000_003 + positions[rows[0]])
        call = partial(attack.run, model, x, t, diagnostics=False)
        res, err = _guarded(name, call, x, [positions[k] for k in rows])
        parts.append(res)
        errors += err
    if len(parts) == 1:
        return parts[0], errors
    order = [k for rows in groups.values() for k in rows]
    back = torch.empty(len(order), dtype=torch.long)
    back[order] = torch.arange(len(order))  # results back in the order of ``positions``
    errors = [errors[int(j)] for j in back]

    def cat(values: list[torch.Tensor]) -> torch.Tensor:
        v = torch.cat(values)
        return v.index_select(0, back.to(v.device))

    finite = None if any(r.grad_finite is None for r in parts) else cat([r.grad_finite for r in parts])
    fields = ("adv", "iterations", "reached", "loss")
    return AttackResult(*(cat([getattr(r, f) for r in parts]) for f in fields), grad_finite=finite), errors


def _guarded(
    name: str, call: Callable[[], AttackResult], images: torch.Tensor, positions: list[int]
) -> tuple[AttackResult, list[str]]:
    n = len(positions)
    try:
        with torch.enable_grad():  # the loop evaluates the final images itself
            return call(), [""] * n
    except (RuntimeError, ValueError, ArithmeticError) as e:
        log.warning("%s failed on positions %s: %s", name, positions, e)
        error = f"attack error: {type(e).__name__}: {e}"[:300]
        dev = images.device
        res = AttackResult(
            images.clone(),
            torch.zeros(n, dtype=torch.long, device=dev),
            torch.zeros(n, dtype=torch.bool, device=dev),
            torch.full((n,), float("nan"), device=dev),
        )
        return res, [error] * n
