"""Continuous batching for ML-APGD: a fixed number of samples in flight, each at its own iteration.

APGD's state is richer than a step rule's (:mod:`mlattack.attacks.continuous` drives those), so it has its own
scheduler. Every sample in flight carries its iteration index k, point x(k), previous point x(k-1), gradient, step
size, best point (with its gradient, loss and logits), the count of loss-lowering steps since its last checkpoint,
and that checkpoint's decision and best loss. The step-halving decision (:func:`~mlattack.attacks.apgd_steps.halve_step`)
is taken per sample at the sample's own checkpoint iterations, with the span since its own previous checkpoint. When
a sample stops (with ``early_stop``, its first iterate that shows the target, returned with ``iterations = k``;
otherwise after x(nb_iter), returned as its best point) the next queued sample takes its slot at k = 0.

Random starts (``rand_init``): the start of restart r is the (r + 1)-th draw of the sample's own
:func:`~mlattack.attacks.continuous.sample_generator` ``(seed, key)``, a function of (seed, key, r) alone. That is
what :meth:`APGD.perturb` draws for the sample alone given that generator, so every sample's result equals
attacking it alone; ``attack.generator`` is not used. Restarts run as rounds over the samples, one after another,
each round continuous; with ``early_stop`` a round only takes the samples no earlier round stopped (as ``perturb``).

Cost: one forward pass per iterate and sample, as ``perturb``. The last iterate x(nb_iter) needs no gradient. A
batch whose rows are all at their last iterate takes the forward pass alone; a mixed batch (rows entered at
different times) computes the gradient for every row and ignores it for those at their last iterate, rather than
splitting into a second, small forward pass. That is at most one extra input-backward row per sample and restart
(1/nb_iter more backward work); without early stop the rows stay in step and the counts equal ``perturb``'s.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

import torch
from torch import Tensor, nn

from mlattack.attacks.apgd_steps import checkpoints, halve_step, per_sample_view, restart_where_halved
from mlattack.attacks.base import Attack, AttackResult, frozen_eval
from mlattack.attacks.continuous import check_queue, sample_generator

# ``attack`` is an APGD, which declares this scheduler (APGD.fast_scheduler): typed as the base class so that
# nothing here imports the attack's module back


@dataclass
class _Rows:
    """Per-sample tensors of the samples in flight (first dimension: the rows)."""

    x: Tensor  # clean images
    t: Tensor  # targets
    delta: Tensor  # x(k) - x
    prev: Tensor  # x(k-1) - x
    grad: Tensor  # gradient at x(k-1) before the step, at x(k) after the evaluation
    loss: Tensor  # loss at x(k)
    eta: Tensor  # step size
    best_delta: Tensor
    best_grad: Tensor
    best_loss: Tensor
    best_logits: Tensor
    successes: Tensor  # steps since the last checkpoint that lowered the loss
    halved_last: Tensor
    best_loss_last: Tensor
    finite: Tensor  # every gradient taken so far was finite
    k: Tensor  # the iterate x(k) the row is at (also on the host, so that no step waits for the device)

    def apply(self, fn: Callable[[Tensor], Tensor]) -> _Rows:
        return _Rows(*(fn(getattr(self, f.name)) for f in fields(self)))

    def cat(self, other: _Rows, fmt: torch.memory_format) -> _Rows:
        return _Rows(
            *(_like(torch.cat([getattr(self, f.name), getattr(other, f.name)]), fmt) for f in fields(self))
        )


def _like(v: Tensor, fmt: torch.memory_format) -> Tensor:
    """cat and index_select return NCHW tensors; a channels_last input stays channels_last (the fast copy's
    convolutions run NHWC, an NCHW input would cost a reorder per layer)."""
    return v.contiguous(memory_format=fmt) if v.ndim == 4 else v


def run_apgd_continuous(
    attack: Attack,
    model: nn.Module,
    images: Tensor,
    target: Tensor,
    keys: Sequence[int],
    seed: int,
    slots: int,
) -> AttackResult:
    """Attack every sample of ``images`` with ML-APGD, at most ``slots`` in flight; results in input order.

    ``keys`` name the samples for their random starts (positions that do not depend on the batch layout). The
    results equal :meth:`APGD.perturb`'s for each sample alone (without ``rand_init``: an ordinary batch's too);
    ``loss`` and ``reached`` are always those of the returned image (APGD keeps the best point's logits)."""
    check_queue(images, target, keys, slots)
    images = images.detach().float()
    target = target.detach().to(device=images.device, dtype=torch.float32)
    gens = [sample_generator(seed, k) for k in keys] if attack.rand_init else None
    nhwc = images.is_contiguous(memory_format=torch.channels_last) and not images.is_contiguous()
    fmt = torch.channels_last if nhwc else torch.contiguous_format

    def descend(x: Tensor, t: Tensor, rows: Tensor) -> tuple[Tensor, ...]:
        """One restart round over the samples ``rows`` (index_select made ``x`` NCHW)."""
        own = None if gens is None else [gens[i] for i in rows.tolist()]
        return _round(attack, model, _like(x, fmt), t, own, slots, fmt)

    with frozen_eval(model):
        return attack.best_of_restarts(images, target, descend)


def _round(
    attack: Attack,
    model: nn.Module,
    images: Tensor,
    target: Tensor,
    gens: list[torch.Generator] | None,
    slots: int,
    fmt: torch.memory_format,
) -> tuple[Tensor, ...]:
    """One run from a fresh start per sample, continuously: (images, loss, reached, steps, grad_finite, stopped
    early) per sample, as ``APGD._descend`` returns for a batch."""
    n, dev, nb = images.shape[0], images.device, attack.nb_iter
    marks = checkpoints(nb)
    # the steps since the previous checkpoint, at each checkpoint where the decision is taken
    span = {w: w - last for last, w in zip([0, *marks], marks, strict=False) if w < nb}
    at_mark = torch.tensor([i in span for i in range(nb + 2)], device=dev)
    out_adv, out_loss = torch.empty_like(images), torch.empty(n, device=dev)
    out_reached = torch.zeros(n, dtype=torch.bool, device=dev)
    steps = torch.full((n,), nb, dtype=torch.long, device=dev)
    out_finite = torch.ones(n, dtype=torch.bool, device=dev)
    stopped = torch.zeros(n, dtype=torch.bool, device=dev)
    live: _Rows | None = None
    ids: list[int] = []  # row j of ``live`` is sample ids[j] of the round, at iterate ks[j]
    ks: list[int] = []
    queued = 0

    def retire(js: list[int], at_stop: bool) -> None:
        """Write the results of rows ``js`` (``at_stop``: they show the target at x(k); otherwise their best
        point) and drop them from the flight."""
        nonlocal live, ids, ks
        j = torch.tensor(js, dtype=torch.long, device=dev)
        r = torch.tensor([ids[i] for i in js], dtype=torch.long, device=dev)
        s = live.apply(lambda v: v.index_select(0, j))
        out_finite[r] = s.finite
        if at_stop:
            out_adv[r], out_loss[r], out_reached[r], stopped[r] = s.x + s.delta, s.loss, True, True
            steps[r] = torch.tensor([ks[i] for i in js], device=dev)
        else:
            out_adv[r], out_loss[r] = (s.x + s.best_delta).clamp(0.0, 1.0), s.best_loss
            out_reached[r] = attack.reached(s.best_logits, s.t)
        gone = set(js)
        kept = [i for i in range(len(ids)) if i not in gone]
        ids, ks = [ids[i] for i in kept], [ks[i] for i in kept]
        keep = torch.tensor(kept, dtype=torch.long, device=dev)
        live = live.apply(lambda v: _like(v.index_select(0, keep), fmt))

    while True:
        room = min(slots - len(ids), n - queued)
        if room > 0:  # refill the batch from the queue; a new sample starts at k = 0
            x, t = images[queued : queued + room], target[queued : queued + room]
            new = _fresh_rows(attack, x, t, None if gens is None else gens[queued : queued + room])
            live = new.apply(lambda v: _like(v, fmt)) if live is None else live.cat(new, fmt)
            ids += list(range(queued, queued + room))
            ks += [0] * room
            queued += room
        if not ids:
            break
        s = live
        logits = _step_and_evaluate(attack, model, s, ks, nb)
        if attack.early_stop:
            found = attack.reached(logits, s.t).nonzero().flatten().tolist()  # the one host sync per step
            if found:
                retire(found, at_stop=True)
                if not ids:
                    continue
                s = live
        _checkpoints(attack, s, ks, span, at_mark)
        ks, s.k = [kj + 1 for kj in ks], s.k + 1
        spent = [j for j, kj in enumerate(ks) if kj > nb]
        if spent:
            retire(spent, at_stop=False)
    return out_adv, out_loss, out_reached, steps, out_finite, stopped


def _fresh_rows(attack: Attack, x: Tensor, t: Tensor, gens: list[torch.Generator] | None) -> _Rows:
    """Rows for samples entering the flight at k = 0: their start (each from its own generator, if given)."""
    room, dev = x.shape[0], x.device
    if gens is None:
        start = attack.start(x, None)
    else:
        start = torch.cat([attack.start(x[i : i + 1], gens[i]) for i in range(room)])
    zeros = torch.zeros(room, device=dev)
    return _Rows(
        x=x, t=t, delta=start, prev=start, grad=torch.zeros_like(x), loss=zeros,
        eta=torch.full((room,), 2.0 * attack.eps, device=dev),
        best_delta=start, best_grad=torch.zeros_like(x), best_loss=zeros,
        best_logits=torch.zeros(t.shape, device=dev),
        successes=torch.zeros(room, dtype=torch.long, device=dev),
        halved_last=torch.zeros(room, dtype=torch.bool, device=dev), best_loss_last=zeros,
        finite=torch.ones(room, dtype=torch.bool, device=dev),
        k=torch.zeros(room, dtype=torch.long, device=dev),
    )  # fmt: skip


def _step_and_evaluate(attack: Attack, model: nn.Module, s: _Rows, ks: list[int], nb: int) -> Tensor:
    """Move every row past its start one step, evaluate x(k) (its gradient unless k = nb_iter), keep the best
    point; returns the logits at x(k)."""
    fresh, last = s.k == 0, s.k == nb
    if ks.count(0) < len(ks):  # rows past their start take a step (momentum from k = 2 on)
        z = attack.step(s.x, s.delta, s.prev, s.grad, s.eta, s.k > 1)
        s.prev, s.delta = s.delta, torch.where(per_sample_view(~fresh, z), z, s.delta)
    point = s.x + s.delta
    if ks.count(nb) == len(ks):  # every row at its last iterate: the forward pass alone
        with torch.no_grad():
            logits = attack.forward(model, point)
            loss, grad = attack.loss_fn(logits, s.t).float(), None
    else:
        loss, grad, logits = attack.loss_and_grad(model, point, s.t)
        # a last iterate's gradient is not taken
        s.finite &= torch.isfinite(grad.flatten(1)).all(1) | last
    s.successes = s.successes + ((loss < s.loss) & ~fresh).long()
    s.loss = loss
    better = (loss < s.best_loss) | fresh
    s.best_loss = torch.where(better, loss, s.best_loss)
    s.best_logits = torch.where(better[:, None], logits, s.best_logits)
    s.best_delta = torch.where(per_sample_view(better, s.delta), s.delta, s.best_delta)
    if grad is not None:
        # restarts need the gradient at the best point (none is taken at the last iterate)
        s.best_grad = torch.where(per_sample_view(better & ~last, grad), grad, s.best_grad)
        s.grad = grad
    s.best_loss_last = torch.where(fresh, loss, s.best_loss_last)
    return logits


def _checkpoints(attack: Attack, s: _Rows, ks: list[int], span: dict[int, int], at_mark: Tensor) -> None:
    """Each row at one of its checkpoints decides whether to halve, with the span since its own last checkpoint."""
    marks_here = sorted({kj for kj in ks if kj in span})
    if not marks_here:
        return
    mark = at_mark[s.k]
    halve = torch.zeros_like(mark)
    for w in marks_here:  # the same comparisons as perturb's (an int span), for the rows at w
        h = halve_step(s.successes, span[w], attack.rho, s.halved_last, s.best_loss, s.best_loss_last)
        halve = halve | ((s.k == w) & h)
    restart_where_halved(s, halve)
    s.successes = torch.where(mark, 0, s.successes)
    s.halved_last = torch.where(mark, halve, s.halved_last)
    s.best_loss_last = torch.where(mark, s.best_loss, s.best_loss_last)
