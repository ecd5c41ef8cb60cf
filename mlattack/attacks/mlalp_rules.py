"""MLA-LP's per-iteration rules, kept apart from the loop in :mod:`mlattack.attacks.mlalp`: the per-label losses
the LP linearises, the loss gaps to the thresholds, the give-up tests and the threshold updates, each in the study's
form (flattened batch indices, one threshold for the batch) and in the per-sample form of the corrected variant.

Index convention of the study's code: ``flat`` arrays hold the attacked entries (labels the attack must flip) of
the whole batch in row-major order, and the study indexes them with the *sample* index ``i``. An index past the
end of that array raised ``IndexError`` there (a batch with fewer attacked entries than samples, possible only when
some samples need no flip at all); we read such a test as false.
"""

from __future__ import annotations

import torch

from mlattack.attacks.losses import PROB_EPS

#: the study's threshold update also fires while the watched probability is below this value
NEAR_BOUNDARY = 0.6
#: the study's "outputs unchanged" give-up test only applies from this iteration on (0-based)
STALL_FROM_ITER = 5


def clamp_p(p: torch.Tensor) -> torch.Tensor:
    """Probabilities clamped to [1e-6, 1 - 1e-6] in their own dtype, as the study's code clamps float32 outputs."""
    return p.clamp(PROB_EPS, 1.0 - PROB_EPS)


def label_losses(
    logits: torch.Tensor, target: torch.Tensor, clamp: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-label BCE (N, C) in float64 and its derivative w.r.t. the logit (N, C).

    ``clamp``: the study's form, BCE of the float32 sigmoid clamped to [1e-6, 1 - 1e-6]: the logs are float32 as in
    its numpy code, and the derivative is zero where the clamp is active (autograd through ``clamp`` passes the
    gradient only inside the closed interval), so a saturated label gets an all-zero Jacobian row. Otherwise the
    exact BCE of the logit (softplus form, finite for any logit) whose derivative ``p - t`` (float64, where a
    float32 sigmoid would round to 1) never vanishes.
    """
    z = logits.float()
    p = torch.sigmoid(z)
    t = target.to(torch.float32)
    if clamp:
        pc = clamp_p(p)
        loss = -(t.double() * pc.log().double() + (1.0 - t).double() * (1.0 - pc).log().double())
        inside = (p >= PROB_EPS) & (p <= 1.0 - PROB_EPS)
        return loss, torch.where(inside, p - t, torch.zeros_like(p))
    zd, td = z.double(), t.double()
    loss = td * torch.nn.functional.softplus(-zd) + (1.0 - td) * torch.nn.functional.softplus(zd)
    return loss, torch.sigmoid(zd) - td


def threshold_losses(thr: torch.Tensor, target: torch.Tensor, downward: bool) -> torch.Tensor:
    """(N, C) float64 loss each label has at its threshold: the LP asks the linearised loss to reach it.

    ``thr`` bounds the probability of the side the attack moves a label away from. ``downward`` (the study's form)
    applies it to the positive probability of every label, so a lowered threshold asks *less* of a label to show
    (``p >= thr``) and more of a label to hide (``p <= thr``); otherwise a label to show needs ``p >= 1 - thr``.
    """
    t = target.double()
    tp = thr if downward else torch.where(t > 0.5, 1.0 - thr, thr)
    return -(t * tp.log() + (1.0 - t) * (1.0 - tp).log())


def logit_aim_gaps(
    logits: torch.Tensor,
    dloss: torch.Tensor,
    thr: torch.Tensor,
    target: torch.Tensor,
    downward: bool,
    margin: float,
) -> torch.Tensor:
    """(N, C) float64 loss gaps for the ablation that aims past the threshold: ``dloss * (logit(aim) - z)``, so the
    LP's linearised logit reaches ``aim``, the threshold probability moved ``margin`` towards the target side (for a
    label to show: ``p = thr + margin``; clamped into (1e-6, 1 - 1e-6)). The linearised loss would stop short of
    it (BCE is convex in the logit); the linearised logit lands on it for a locally linear network."""
    t = target.double()
    tp = thr if downward else torch.where(t > 0.5, 1.0 - thr, thr)
    aim = torch.where(t > 0.5, tp + margin, tp - margin).clamp(PROB_EPS, 1.0 - PROB_EPS)
    return dloss.double() * (torch.logit(aim) - logits.double())


def watched(p: torch.Tensor, target: torch.Tensor, downward: bool) -> torch.Tensor:
    """The probability the threshold rule watches: the positive one (study), or that of the non-target side."""
    return p if downward else torch.where(target > 0.5, 1.0 - p, p)


def stall_give_up(
    samples: list[int], it: int, attacked: torch.Tensor, p_new: torch.Tensor, p_cur: torch.Tensor
) -> list[bool]:
    """The study's "outputs unchanged" test for each sample ``i`` in ``samples``: from iteration 5 on, entry ``i``
    of the batch's flattened attacked outputs after the step equals the same entry of the clamped outputs before it
    (float32, exact). Entry ``i`` belongs to whichever sample holds the i-th attacked label, so a sample is given up
    when e.g. a finished sample's labels sit at its index."""
    if it < STALL_FROM_ITER:
        return [False] * len(samples)
    new, cur = p_new[attacked], clamp_p(p_cur)[attacked]
    return [i < new.numel() and bool(new[i] == cur[i]) for i in samples]


def batch_threshold_update(
    samples: list[int],
    thr: torch.Tensor,
    attacked: torch.Tensor,
    w_before: torch.Tensor,
    w_new: torch.Tensor,
    step: float,
    floor: float,
) -> int:
    """The study's threshold update, in place on ``thr`` (N, C); returns how many times it fired.

    For each sample ``i`` in order, on entry ``i`` of the batch's flattened attacked arrays: if the watched
    probability did not fall (``before <= after``) or is below 0.6, and that entry's threshold is above ``floor``,
    the entry's threshold minus ``step`` is written to *every* attacked label of the batch. So all attacked labels
    share one threshold that falls by ``step`` per firing sample (in float64, 0.5 - 8 x 0.05 is
    0.10000000000000007 > 0.1, so with the study's values it ends at 0.05).
    """
    before, after = w_before[attacked], w_new[attacked]
    fired = 0
    for i in samples:
        if i >= before.numel():
            continue
        value = thr[attacked][i]
        if (before[i] <= after[i] or after[i] < NEAR_BOUNDARY) and value > floor:
            thr[attacked] = value - step
            fired += 1
    return fired


def label_threshold_update(
    rows: torch.Tensor,
    thr: torch.Tensor,
    attacked: torch.Tensor,
    w_before: torch.Tensor,
    w_new: torch.Tensor,
    step: float,
    floor: float,
) -> int:
    """The same test per sample and per attacked label, on that label's own outputs (samples ``rows`` only); a
    threshold never goes below ``floor``. In place on ``thr``; returns how many thresholds moved."""
    wb, wn, th = w_before[rows], w_new[rows], thr[rows]
    fire = attacked[rows] & ((wb <= wn) | (wn < NEAR_BOUNDARY)) & (th - step >= floor - 1e-12)
    thr[rows] = torch.where(fire, th - step, th)
    return int(fire.sum())
