"""One configured attack within a run: its name, the attack, its files (a :class:`~mlattack.rundir.records.RunFolder`)
and the metric the attack loop fills."""

from __future__ import annotations

from dataclasses import dataclass

from mlattack.attacks.base import Attack
from mlattack.evaluation.metrics import ShowManyLabels
from mlattack.rundir.records import RunFolder


@dataclass
class AttackJob:
    """What the attack loop needs of one attack: ``folder`` keeps its records and images on disk, ``metric`` (set
    by the callback, on the loop's device) accumulates its success; ``avg_labels`` sets the scenarios' thresholds."""

    name: str
    attack: Attack
    avg_labels: float
    folder: RunFolder
    metric: ShowManyLabels | None = None

    @property
    def num_samples(self) -> int:
        """The first ``num_samples`` positions of the selection."""
        return self.folder.num_samples
