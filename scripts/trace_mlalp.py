"""Trace MLA-LP iteration by iteration on a trained model: per active sample, the threshold its attacked labels
carry, how many of its hidden labels already "meet" it, how many LP rows still ask for a step, the step's L∞ norm
(exactly 0 means the LP's optimum is r = 0) and the resets to the clean image so far. The attack itself is not
changed: the script wraps :meth:`MLALP._steps` and reads the inputs the LP sees (docs/PROTOCOL.md, P2/P11/P12).

    PYTHONPATH=$PWD .venv/bin/python scripts/trace_mlalp.py --model models:/mlgcn-synthetic@best
    PYTHONPATH=$PWD .venv/bin/python scripts/trace_mlalp.py --model ... --set aim_at_threshold=false --detail 0 1
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import yaml

from mlattack.attacks import mlalp_rules as rules
from mlattack.attacks.mlalp import MLALP
from mlattack.data.datamodule import build_dataset
from mlattack.evaluation.selection import select_correct_samples
from mlattack.tracking.registry import load_network
from mlattack.tracking.store import default_tracking_uri


class TracedMLALP(MLALP):
    """MLA-LP whose LP inputs and outputs are recorded per iteration (one record per active sample)."""

    clean: torch.Tensor
    records: list[dict]

    def _steps(self, model, x, z, thr, tgt):  # noqa: ANN001, ANN202 - same signature as the parent
        # one call per iteration, for all active samples
        it = 1 + max((r["it"] for r in self.records), default=0)
        ids = torch.cdist(x.flatten(1).float(), self.clean.flatten(1).float()).argmin(1).tolist()
        p = torch.sigmoid(z.double())
        hidden = (tgt > 0.5) & ~self._shown(z)
        bound = thr if self.threshold_downward else 1.0 - thr  # the probability a label to show must reach
        loss, dloss = rules.label_losses(z, tgt, self.clamp_probabilities)
        if self.aim_at_threshold:
            delta = rules.threshold_losses(thr, tgt, self.threshold_downward) - loss
        else:
            delta = rules.logit_aim_gaps(z, dloss, thr, tgt, self.threshold_downward, self.threshold_step)
        resets = self._events.get("resets", 0)
        r, failed = super()._steps(model, x, z, thr, tgt)
        with torch.no_grad():  # the labels the step shows and hides (on the clipped image the loop keeps)
            z1 = model((x + r.view_as(x)).clamp(0, 1).float())
        before, after = self._shown(z), self._shown(z1)
        lost_p = torch.where(before & ~after, torch.sigmoid(z1.double()), torch.nan)
        for k, s in enumerate(ids):
            h = hidden[k]
            self.records.append({
                "it": it, "pos": k, "sample": s, "thr": float(thr[k].min()),
                "hidden": int(h.sum()), "meet": int((h & (p[k] >= bound[k])).sum()),
                "asking": int((delta[k] < 0).sum()), "step": float(r[k].abs().max()), "failed": bool(failed[k]),
                "resets_before": resets, "lost": int((before[k] & ~after[k]).sum()),
                "gained": int((~before[k] & after[k]).sum()), "lost_p": float(lost_p[k].nan_to_num(-1).max()),
            })  # fmt: skip
        return r, failed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="models:/mlgcn-synthetic@best")
    ap.add_argument("--data", default="configs/data/synthetic.yaml")
    ap.add_argument("--samples", type=int, default=10, help="the first N selected samples, as one batch")
    ap.add_argument("--variant", default="reference")
    ap.add_argument("--set", nargs="*", default=[], help="boolean switches, e.g. aim_at_threshold=false")
    ap.add_argument(
        "--detail", type=int, nargs="*", default=[0, 1], help="batch positions printed row by row"
    )
    a = ap.parse_args()
    cfg = yaml.safe_load(Path(a.data).read_text())
    data = build_dataset(cfg["source"], "test", cfg.get("root"), image_size=cfg["image_size"], seed=cfg["seed"],
                         **cfg.get("options", {}))  # fmt: skip
    net = load_network(a.model, default_tracking_uri(create=False))  # ./mlruns or $MLFLOW_TRACKING_URI
    sel = select_correct_samples(net, data, a.samples)
    images = torch.stack([data[i]["image"] for i in sel.indices])
    target = torch.ones(len(images), data.targets.shape[1])
    switches = {k: v.lower() == "true" for k, v in (s.split("=") for s in a.set)}
    attack = TracedMLALP(variant=a.variant, max_iter=20, **switches)
    attack.clean, attack.records = images.double(), []
    adv = attack(net, images, target)
    with torch.no_grad():
        shown = (net(adv) >= 0).sum(1).tolist()
    print(f"samples {sel.indices}; labels shown after the attack: {shown}; events: {attack._events}")
    print(
        "it  sample  thr     hidden  meet  asking  |r|inf      failed  resets_before  lost  gained  max p lost"
    )
    for r in attack.records:
        if r["sample"] in a.detail:
            print(f"{r['it']:>2}  {r['sample']:>6}  {r['thr']:.3f}  {r['hidden']:>6}  {r['meet']:>4}  "
                  f"{r['asking']:>6}  {r['step']:.3e}  {r['failed']!s:>6}  {r['resets_before']:>5}  {r['lost']:>4}  "
                  f"{r['gained']:>6}  {r['lost_p']:.3f}")  # fmt: skip
    print(
        "per iteration: it, active, steps exactly 0, min/median/max |r|inf, meet/hidden, samples losing a label"
    )
    for it in sorted({r["it"] for r in attack.records}):
        rs = [r for r in attack.records if r["it"] == it]
        steps = torch.tensor([r["step"] for r in rs])
        print(f"{it:>2}  {len(rs):>2}  {int((steps == 0).sum()):>2}  {steps.min():.2e} {steps.median():.2e} "
              f"{steps.max():.2e}  {sum(r['meet'] for r in rs)}/{sum(r['hidden'] for r in rs)}  "
              f"{sum(r['lost'] > 0 for r in rs)}")  # fmt: skip


if __name__ == "__main__":
    main()
