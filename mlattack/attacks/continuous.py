"""Continuous batching for the iterative gradient attacks: a fixed number of samples in flight.

With early stop, an ordinary batch shrinks as its samples succeed, and the survivors run at a smaller, less
efficient batch size (on the demo model one sample costs 1.7x per step at batch 1 what it costs at batch 8). The
scheduler here keeps ``slots`` samples in every forward pass instead: when a sample stops (it shows the target, or
its ``nb_iter`` steps are spent) the next sample of the queue takes its place, with its own step counter, momentum
and random start. Only the last samples of the queue run in a shrinking batch.

Every sample's state is its own, so each result equals attacking that sample alone (up to float rounding of a
different batch size). Random starts are drawn from a generator seeded from ``(seed, key)`` only
(:func:`sample_generator`; ``key`` is the sample's selection position), so they do not depend on which batch, chunk
or DDP rank the sample lands in. Attacks that expose an :class:`~mlattack.attacks.iterative.IterativePlan`
(``attack.iterative_plan(model)``: FGSM, FGM, BIM, PGD, MI-FGSM, SLIDE, LabelGraphPGD) are supported; see
:func:`supports_continuous`. ML-APGD, whose per-sample state is its own, has its own scheduler
(:mod:`mlattack.attacks.apgd_continuous`) on the same per-sample generators.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

import torch
from torch import nn

from mlattack.attacks.base import Attack, AttackResult, frozen_eval
from mlattack.attacks.iterative import IterativePlan


def supports_continuous(attack: Attack) -> bool:
    """Whether ``attack`` is an iterative gradient attack the scheduler can drive (it has ``iterative_plan``)."""
    return callable(getattr(attack, "iterative_plan", None))


def sample_generator(seed: int, key: int) -> torch.Generator:
    """A CPU generator for one sample, seeded from ``(seed, key)`` alone: the sample's random start is the same in
    any batch layout. A CPU generator serves CUDA inputs too (the draw is moved)."""
    digest = hashlib.blake2b(f"{int(seed)}/{int(key)}".encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1)


def sample_starts(plan: IterativePlan, images: torch.Tensor, keys: Sequence[int], seed: int) -> torch.Tensor:
    """The initial perturbation of each sample (zeros without a random start), each drawn from its own
    :func:`sample_generator`."""
    if plan.start is None:
        return torch.zeros_like(images)
    parts = [plan.start(images[i : i + 1], sample_generator(seed, k)) for i, k in enumerate(keys)]
    return torch.cat(parts) if parts else torch.zeros_like(images)


def check_queue(images: torch.Tensor, target: torch.Tensor, keys: Sequence[int], slots: int) -> None:
    """The schedulers' arguments: a batch of images, one target and one key per image, at least one slot."""
    if images.ndim != 4 or target.ndim != 2 or target.shape[0] != images.shape[0] or len(keys) != len(images):
        raise ValueError("images (N, C, H, W), target (N, num_labels) and N keys are needed")
    if slots < 1:
        raise ValueError(f"slots must be >= 1, got {slots}")


class _InFlight:
    """The per-sample tensors of the samples being attacked; row ``j`` belongs to sample ``rows[j]``."""

    def __init__(self, images: torch.Tensor) -> None:
        # cat and index_select return contiguous tensors: channels_last inputs are kept channels_last (the fast
        # copy's convolutions run NHWC; an NCHW input would cost a reorder in every layer)
        nhwc = images.is_contiguous(memory_format=torch.channels_last) and not images.is_contiguous()
        self.fmt = torch.channels_last if nhwc else torch.contiguous_format
        empty = images[:0]
        self.rows: list[int] = []
        self.steps: list[int] = []  # gradient steps taken, per sample (host side: no sync to read it)
        self.x, self.t, self.delta = empty, None, empty
        self.state: torch.Tensor | None = None
        dev = images.device
        self.finite = torch.ones(0, dtype=torch.bool, device=dev)
        # early stop found on the device and not yet read by the host: the row is frozen at the image, step count
        # and loss it showed the target with, until the next sync retires it
        self.frozen = torch.zeros(0, dtype=torch.bool, device=dev)
        self.stop_step = torch.zeros(0, dtype=torch.long, device=dev)
        self.stop_loss = torch.zeros(0, dtype=torch.float32, device=dev)
        self.steps_dev = torch.zeros(0, dtype=torch.long, device=dev)

    def _like(self, v: torch.Tensor) -> torch.Tensor:
        return v.contiguous(memory_format=self.fmt)

    def add(self, rows: list[int], x, t, delta, state) -> None:
        self.rows += rows
        self.steps += [0] * len(rows)
        self.x = self._like(torch.cat([self.x, x]))
        self.t = t if self.t is None else torch.cat([self.t, t])
        self.delta = self._like(torch.cat([self.delta, delta]))
        if state is not None:
            self.state = self._like(state if self.state is None else torch.cat([self.state, state]))
        k, dev = len(rows), x.device
        self.finite = torch.cat([self.finite, torch.ones(k, dtype=torch.bool, device=dev)])
        self.frozen = torch.cat([self.frozen, torch.zeros(k, dtype=torch.bool, device=dev)])
        self.stop_step = torch.cat([self.stop_step, torch.zeros(k, dtype=torch.long, device=dev)])
        self.stop_loss = torch.cat([self.stop_loss, torch.zeros(k, dtype=torch.float32, device=dev)])
        self.steps_dev = torch.cat([self.steps_dev, torch.zeros(k, dtype=torch.long, device=dev)])

    def keep(self, keep: list[int]) -> None:
        idx = torch.tensor(keep, dtype=torch.long, device=self.x.device)
        self.rows = [self.rows[j] for j in keep]
        self.steps = [self.steps[j] for j in keep]
        self.x, self.delta = (
            self._like(self.x.index_select(0, idx)),
            self._like(self.delta.index_select(0, idx)),
        )
        self.t, self.finite = self.t.index_select(0, idx), self.finite.index_select(0, idx)
        self.frozen, self.stop_step = self.frozen.index_select(0, idx), self.stop_step.index_select(0, idx)
        self.stop_loss, self.steps_dev = (
            self.stop_loss.index_select(0, idx),
            self.steps_dev.index_select(0, idx),
        )
        self.state = None if self.state is None else self._like(self.state.index_select(0, idx))

    def freeze(self, shows: torch.Tensor, loss: torch.Tensor) -> None:
        """Rows that show the target now (``shows``) stop here: step count and loss kept on the device."""
        newly = shows & ~self.frozen
        self.stop_step = torch.where(newly, self.steps_dev, self.stop_step)
        self.stop_loss = torch.where(newly, loss.detach().float(), self.stop_loss)
        self.frozen = self.frozen | newly

    def advance(self, delta: torch.Tensor, state: torch.Tensor | None) -> None:
        """Take one step's ``delta`` and ``state``; frozen rows keep the image they stopped with."""
        hold = self.frozen.view(-1, *([1] * (delta.ndim - 1)))
        self.delta = self._like(torch.where(hold, self.delta, delta))
        self.state = state if state is None or self.state is None else torch.where(hold, self.state, state)
        self.steps = [s + 1 for s in self.steps]
        self.steps_dev = self.steps_dev + 1


def default_sync_every(device: torch.device) -> int:
    """Steps between the host's reads of the early-stop flags: ``MLATTACK_SYNC_EVERY`` if set, else 8 on CUDA (a
    read stalls the device's queue; a small model's step is shorter than that stall) and 1 elsewhere (on a CPU the
    read is free, and a frozen sample's extra steps are not)."""
    if os.environ.get("MLATTACK_SYNC_EVERY"):
        return max(1, int(os.environ["MLATTACK_SYNC_EVERY"]))
    return 8 if device.type == "cuda" else 1


def run_continuous(
    attack: Attack,
    model: nn.Module,
    images: torch.Tensor,
    target: torch.Tensor,
    keys: Sequence[int],
    seed: int,
    slots: int,
    diagnostics: bool = True,
    sync_every: int | None = None,
) -> AttackResult:
    """Attack every sample of ``images`` with at most ``slots`` in flight; results in input order.

    ``keys`` name the samples for their random starts (use positions that do not depend on the batch layout).
    Honours ``attack.early_stop`` as :func:`~mlattack.attacks.iterative.run_iterative` does: a sample found to show
    the target before step ``i`` is returned as that image with ``iterations = i``. ``diagnostics=False`` skips the
    forward pass on images that spent their budget (``reached`` False, ``loss`` NaN for them), as ``Attack.run``.

    ``sync_every`` (default :func:`default_sync_every`): the host reads which samples stopped only every that many
    steps (and when a sample's budget is spent). Until then a stopped sample stays in the batch, frozen on the
    device at the image, step count and loss it stopped with, so its result is the same for any value; only its
    slot is refilled later.
    """
    check_queue(images, target, keys, slots)
    images = images.detach().float()
    target = target.detach().to(device=images.device, dtype=torch.float32)
    n, dev = images.shape[0], images.device
    every = default_sync_every(dev) if sync_every is None else max(1, int(sync_every))
    adv = images.clone()
    iterations = torch.zeros(n, dtype=torch.long, device=dev)
    reached = torch.zeros(n, dtype=torch.bool, device=dev)
    loss_out = torch.full((n,), float("nan"), device=dev)
    grad_finite = torch.ones(n, dtype=torch.bool, device=dev)
    with frozen_eval(model):
        plan = attack.iterative_plan(model)
        live, queued, since_sync = _InFlight(images), 0, 0

        def retire(js: list[int], stopped: bool) -> None:
            """Write the results of in-flight rows ``js`` and drop them (``stopped``: they showed the target)."""
            idx = torch.tensor(js, dtype=torch.long, device=dev)
            rows = torch.tensor([live.rows[j] for j in js], dtype=torch.long, device=dev)
            final = live.x.index_select(0, idx) + live.delta.index_select(0, idx)
            adv[rows] = final.clamp(0.0, 1.0)
            grad_finite[rows] = live.finite.index_select(0, idx)
            if stopped:
                iterations[rows] = live.stop_step.index_select(0, idx)
                reached[rows], loss_out[rows] = True, live.stop_loss.index_select(0, idx)
            else:
                iterations[rows] = torch.tensor([live.steps[j] for j in js], device=dev)
                if diagnostics:
                    t = live.t.index_select(0, idx)
                    with torch.no_grad():
                        logits = attack.forward(model, final)
                    reached[rows] = attack.reached(logits, t)
                    loss_out[rows] = attack.loss_fn(logits, t).float()
            gone = set(js)
            live.keep([j for j in range(len(live.rows)) if j not in gone])

        while True:
            spent = [j for j, s in enumerate(live.steps) if s == plan.nb_iter]
            if attack.early_stop and live.rows and (spent or since_sync >= every):
                found = live.frozen.nonzero().flatten().tolist()  # the host sync: once per `every` steps
                since_sync = 0
                if found:
                    retire(found, stopped=True)
                    spent = [j for j, s in enumerate(live.steps) if s == plan.nb_iter]
            if spent:
                retire(spent, stopped=False)
            k = min(slots - len(live.rows), n - queued)
            if k > 0:  # refill the batch from the queue
                new = list(range(queued, queued + k))
                x, t = images[queued : queued + k], target[queued : queued + k]
                delta = sample_starts(plan, x, keys[queued : queued + k], seed)
                live.add(new, x, t, delta, torch.zeros_like(x) if plan.momentum else None)
                queued += k
            if not live.rows:
                break
            loss, grad, logits = attack.loss_and_grad(model, live.x + live.delta, live.t)
            # a frozen row's image does not change, so neither does its gradient: its record is already final
            live.finite &= torch.isfinite(grad.flatten(1)).all(1) | live.frozen
            if attack.early_stop:
                live.freeze(attack.reached(logits, live.t), loss)
            update, state = plan.step(grad, live.state)
            delta = live.delta + update
            if plan.project is not None:
                delta = plan.project(delta)
            live.advance((live.x + delta).clamp(0.0, 1.0) - live.x, state)
            since_sync += 1
    return AttackResult(
        adv=adv, iterations=iterations, reached=reached, loss=loss_out, grad_finite=grad_finite
    )
