"""Per-sample attack measurements and their DDP-safe accumulator (a torchmetrics Metric).

Sums live in registered states with ``dist_reduce_fx="sum"``, so under DDP every rank attacks its share of the
samples and ``compute()`` returns the numbers of the whole selection.
"""

from __future__ import annotations

import math

import torch
from torchmetrics import Metric

from mlattack.rundir.records import COSTS, NORMS
from mlattack.scenarios import NUM_SCENARIOS, scenario_success


def perturbation_norms(clean: torch.Tensor, adv: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-sample size of r = adv − clean: L2, L1, L∞ (pixel range [0,1]), RMSD on the 0–255 scale, mean |r|."""
    r = (adv.float() - clean.float()).flatten(1)
    return {
        "l2": r.norm(p=2, dim=1),
        "l1": r.abs().sum(1),
        "linf": r.abs().amax(1),
        "rmsd": r.pow(2).mean(1).sqrt() * 255.0,
        "mean_abs": r.abs().mean(1),
    }


class ShowManyLabels(Metric):
    """Accumulates success per scenario, labels shown (mean and histogram), norms, iterations and time.

    ``update(labels_shown, norms, iterations, seconds, valid)`` takes per-sample tensors; samples with
    ``valid == False`` (numerical failure) count as attacked but unsuccessful and are excluded from the norm means.

    Norms are averaged two ways: ``<norm>_mean`` over every (valid) attacked sample, and
    ``<norm>_mean_success_n<k>`` over the samples that succeeded in scenario k, which is how the study's code
    reports them (its evaluation drops the failed samples before averaging).
    """

    full_state_update = False

    def __init__(self, num_classes: int, thresholds: torch.Tensor) -> None:
        super().__init__()
        self.num_classes = int(num_classes)
        self.register_buffer("thresholds", thresholds.long().clone(), persistent=False)
        self.add_state("count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("valid", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("success", torch.zeros(NUM_SCENARIOS, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state(
            "shown_hist", torch.zeros(self.num_classes + 1, dtype=torch.long), dist_reduce_fx="sum"
        )
        self.add_state("norm_sum", torch.zeros(len(NORMS), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state(
            "norm_success_sum",
            torch.zeros(NUM_SCENARIOS, len(NORMS), dtype=torch.float64),
            dist_reduce_fx="sum",
        )
        self.add_state("iterations", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("seconds", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("reached", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("costed", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("passes", torch.zeros(2, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("peak_mb", torch.tensor(-math.inf, dtype=torch.float64), dist_reduce_fx="max")
        # the same scoring on the clean images: what the attacked samples show without any attack
        self.add_state("clean_count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("clean_success", torch.zeros(NUM_SCENARIOS, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("clean_shown", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(
        self,
        labels_shown: torch.Tensor,
        norms: dict[str, torch.Tensor],
        iterations: torch.Tensor,
        seconds: torch.Tensor,
        reached: torch.Tensor,
        valid: torch.Tensor | None = None,
        cost: dict[str, torch.Tensor] | None = None,
        clean_shown: torch.Tensor | None = None,
    ) -> None:
        """``clean_shown``: the labels each sample's clean image shows (its true labels, for the selected samples),
        scored as the adversarial ones are: the baseline an attack's success is read against."""
        shown = labels_shown.long().to(self.count.device)
        if clean_shown is not None:
            clean = clean_shown.long().to(shown.device)
            self.clean_count += clean.numel()
            self.clean_success += scenario_success(clean, self.thresholds).sum(0)
            self.clean_shown += clean.double().sum()
        ok = torch.ones_like(shown, dtype=torch.bool) if valid is None else valid.bool().to(shown.device)
        self.count += shown.numel()
        self.valid += ok.sum()
        won = scenario_success(shown, self.thresholds) & ok.unsqueeze(1)  # (N, S)
        self.success += won.sum(0)
        self.shown_hist += torch.bincount(
            shown[ok].clamp(0, self.num_classes), minlength=self.num_classes + 1
        )
        stacked = torch.stack([norms[k].double().to(shown.device) for k in NORMS], dim=1)
        self.norm_sum += stacked[ok].sum(0)
        self.norm_success_sum += won.double().T @ stacked.nan_to_num()
        self.iterations += iterations.double().to(shown.device).sum()
        self.seconds += seconds.double().to(shown.device).sum()
        self.reached += (reached.bool().to(shown.device) & ok).sum()
        if cost is not None:
            self._update_cost({k: cost[k].double().to(shown.device) for k in COSTS})

    def _update_cost(self, cost: dict[str, torch.Tensor]) -> None:
        has = torch.isfinite(cost["forwards"]) & torch.isfinite(cost["backwards"])
        self.costed += has.sum()
        self.passes += torch.stack([cost["forwards"][has].sum(), cost["backwards"][has].sum()])
        peak = cost["peak_mb"][torch.isfinite(cost["peak_mb"])]
        if peak.numel():
            self.peak_mb = torch.maximum(self.peak_mb, peak.max())

    def compute(self) -> dict[str, torch.Tensor]:
        n = self.count.clamp(min=1).double()
        v = self.valid.clamp(min=1).double()
        hist = self.shown_hist.double()
        labels = torch.arange(self.num_classes + 1, dtype=torch.float64, device=hist.device)
        out = {f"success_rate_n{k}": self.success[k].double() / n for k in range(NUM_SCENARIOS)}
        out.update(
            {
                "labels_shown_mean": (hist * labels).sum() / v,
                "target_reached_rate": self.reached.double() / n,
                "iterations_mean": self.iterations / n,
                "seconds_per_sample": self.seconds / n,
                "num_samples": self.count.double(),
                "num_failed": (self.count - self.valid).double(),
                # NaN (not logged) when no sample has a measured cost
                "forwards_per_sample": self.passes[0] / self.costed.double(),
                "backwards_per_sample": self.passes[1] / self.costed.double(),
                "peak_memory_mb": torch.where(self.peak_mb.isfinite(), self.peak_mb, math.nan),
            }
        )
        out.update({f"{k}_mean": self.norm_sum[i] / v for i, k in enumerate(NORMS)})
        if int(self.clean_count) > 0:
            c = self.clean_count.double()
            out.update(
                {f"clean_success_rate_n{k}": self.clean_success[k].double() / c for k in range(NUM_SCENARIOS)}
            )
            out["clean_labels_shown_mean"] = self.clean_shown / c
        for n in range(NUM_SCENARIOS):  # absent where no sample succeeded: there is nothing to average
            if int(self.success[n]) > 0:
                won = self.success[n].double()
                out.update(
                    {f"{k}_mean_success_n{n}": self.norm_success_sum[n, i] / won for i, k in enumerate(NORMS)}
                )
        return out
