"""One ``mlattack attack`` invocation in MLflow: the parent run and its nested attack runs, written through one
object so the runner never talks to MLflow itself.

What a parent carries: the run key and writer tags, MLflow's source tags, the context params (model, data,
settings), the attacked model and the data split as run inputs, ``selection.json``, ``success_table.md`` and, as
its description, the success table with links to the model and its fit run. Every child repeats the context
params (so runs of different parents compare), adds its attack's settings (``attack.*``, ``attack.yaml``) and its
own results (:func:`~mlattack.tracking.attack_runs.log_attack`).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

import mlflow
from mlflow.entities import Metric

from mlattack.evaluation.records import AttackJob
from mlattack.tracking import attack_runs as runs
from mlattack.tracking.lineage import ModelLineage, all_tags, log_lineage_inputs, run_link
from mlattack.tracking.record import KIND_TAG, NOTE_TAG, RUN_KEY_TAG, attack_params

NOTE_LIMIT = 7900  # MLflow keeps tag values up to 8000 characters


@dataclass
class AttackRunLog:
    """The MLflow record of one attack run (see module docstring); ``open`` creates or resumes the parent."""

    client: mlflow.MlflowClient
    experiment_id: str
    run_key: str
    model: ModelLineage
    context: dict[str, object]  # params on the parent and on every child
    dataset: tuple[str, str, str]  # (name, digest, root): the data split as a run input
    parent: str | None = None
    children: dict[str, str] = field(default_factory=dict)

    def open(self, parent: str | None, run_name: str, seed: int) -> bool:
        """Create the parent run, or reopen ``parent``; claim it for this process. True if it was resumed."""
        resumed = parent is not None
        if parent is None:
            tags = {RUN_KEY_TAG: self.run_key, KIND_TAG: "attack", **all_tags(seed, "mlattack attack")}
            parent = self.client.create_run(self.experiment_id, run_name=run_name, tags=tags).info.run_id
        else:
            print(f"Resuming attack run {parent}")
        self.parent = parent
        runs.claim(self.client, parent)
        self.client.update_run(parent, status="RUNNING")
        return resumed

    def log_parent(self, params: dict[str, object], selection: dict) -> None:
        runs.log_params(self.client, self.parent, {**self.context, **params})
        log_lineage_inputs(self.client, self.parent, self.model, self.dataset)
        self.client.log_dict(self.parent, selection, "selection.json")

    def open_child(self, job: AttackJob, hyperparameters: dict, tags: dict, params: dict, seed: int) -> str:
        """The nested run of one attack, with the context params, its settings and lineage."""
        all_params = {**self.context, **params, **attack_params(hyperparameters)}
        child_tags = {KIND_TAG: "attack", **all_tags(seed, "mlattack attack"), **tags}
        cid = runs.open_child(
            self.client, self.experiment_id, self.parent, job.name, self.run_key, child_tags, all_params
        )
        log_lineage_inputs(self.client, cid, self.model, self.dataset)
        self.children[job.name] = cid
        return cid

    def log_child(
        self, job: AttackJob, values: dict[str, float], class_names: list[str], config: dict
    ) -> None:
        cid = self.children[job.name]
        note = (
            f"**{job.name}** on {self.model.link()}: {values.get('num_samples', 0):.0f} samples, success "
            + ", ".join(f"n={k}: {100 * values[f'success_rate_n{k}']:.1f} %" for k in range(8))
            + f"; {values.get('labels_shown_mean', float('nan')):.2f} labels shown on average. "
            f"Part of [the attack run]({run_link(self.experiment_id, self.parent)})."
        )
        self.client.set_tag(cid, NOTE_TAG, note[:NOTE_LIMIT])
        data = self.dataset[:2]
        runs.log_attack(self.client, cid, job, values, class_names, config, self.model.model_id, data)

    def finish(self, table: str, header: str, avg_labels: float) -> None:
        """The success table as artifact and description, ``avg_labels`` as a metric; the parent ends FINISHED."""
        self.client.log_text(self.parent, header + "\n\n" + table + "\n", "success_table.md")
        note = f"Attack of {self.model.link()} — {header}\n\n{table}\n"
        self.client.set_tag(self.parent, NOTE_TAG, note[:NOTE_LIMIT])
        metric = Metric("avg_labels", avg_labels, int(time.time() * 1000), 0)
        runs.log_metrics_once(self.client, self.parent, [metric])
        self.client.set_terminated(self.parent, "FINISHED")

    def fail(self) -> None:
        """End an interrupted (KILLED) or failed (FAILED) run and its running children."""
        if self.parent is None:
            return
        status = "KILLED" if isinstance(sys.exc_info()[1], KeyboardInterrupt) else "FAILED"
        runs.close_all(self.client, self.parent, self.children, status)
