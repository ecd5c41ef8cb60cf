"""One ``mlattack attack`` invocation in MLflow: the parent run and its nested attack runs, written through one
object so the runner never talks to MLflow itself.

What a parent carries: the run key and writer tags, MLflow's source tags, the context params (model, data,
settings), the attacked model and the data split as run inputs, ``selection.json``, ``success_table.md`` and, as
its description, the success table with links to the model and its fit run. Every child repeats the context
params (so runs of different parents compare), adds its attack's settings (``attack.*``, ``attack.yaml``) and its
own results (:func:`~mlattack.tracking.attack_runs.log_attack`).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field

import mlflow
from mlflow.entities import Metric

from mlattack.errors import interrupt_exit
from mlattack.intervals import format_rate
from mlattack.rundir.lock import this_process
from mlattack.rundir.records import RunFolder
from mlattack.scenarios import NUM_SCENARIOS
from mlattack.tracking import attack_runs as runs
from mlattack.tracking.lineage import ModelLineage, all_tags, log_lineage_inputs, run_link
from mlattack.tracking.record import KIND_TAG, NOTE_TAG, RUN_KEY_TAG, WRITER_TAG, attack_params

NOTE_LIMIT = 7900  # MLflow keeps tag values up to 8000 characters


def parent_run_name(model: str, source: str, stamp: str) -> str:
    """``attack-<model>-<time>``, the data source added only when the model's name does not end with it
    (registered names are ``<network>-<dataset>`` already)."""
    name = model if model.endswith(f"-{source}") else f"{model}-{source}"
    return f"attack-{name}-{stamp}"


def success_note(metrics: dict[str, dict[str, float]]) -> str:
    """The parent's success table as Markdown MLflow renders (blank lines around it): per attack N, each scenario's
    rate with its 95 % Wilson interval, mean labels shown and mean L2, rounded for reading."""
    head = ["attack", "N", *(f"n={k}" for k in range(NUM_SCENARIOS)), "labels shown", "L2 (all)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---", "--:", *["--:"] * (len(head) - 2)]) + "|"]
    for name, m in metrics.items():
        n = int(m.get("num_samples", 0))
        rates = [format_rate(round(m[f"success_rate_n{k}"] * n), n) for k in range(NUM_SCENARIOS)]
        shown, l2 = m.get("labels_shown_mean", float("nan")), m.get("l2_mean", float("nan"))
        lines.append("| " + " | ".join([name, str(n), *rates, f"{shown:.2f}", f"{l2:.3f}"]) + " |")
    return "\n".join(lines)


def ui_table(table: str) -> str:
    """The table with two non-breaking spaces opening each cell: MLflow draws description tables without cell
    padding, so "1" and "100 %" of neighbouring cells would read as "1100 %"."""
    return "\n".join(
        line if line.startswith("|-") else line.replace(" | ", " | &nbsp;&nbsp;")
        for line in table.split("\n")
    )


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

    def open_child(
        self, folder: RunFolder, norm: str | None, hyperparameters: dict, tags: dict, params: dict, seed: int
    ) -> str:
        """The nested run of one attack (``folder``: its files; ``norm``: the distance its class declares), with the
        context params, its settings and lineage."""
        all_params = {**self.context, **params, **attack_params(hyperparameters, norm)}
        child_tags = {KIND_TAG: "attack", **all_tags(seed, "mlattack attack"), **tags}
        cid = runs.open_child(self.client, self.experiment_id, self.parent, folder.name, self.run_key, child_tags,
                              all_params, folder.load_records())  # fmt: skip
        log_lineage_inputs(self.client, cid, self.model, self.dataset)
        self.children[folder.name] = cid
        return cid

    def log_child(
        self,
        folder: RunFolder,
        attack: object,
        values: dict[str, float],
        class_names: list[str],
        config: dict,
    ) -> None:
        """Finish one attack's run from its files (``folder``) and results; ``attack`` gives the panel its budget."""
        cid = self.children[folder.name]
        n = int(values.get("num_samples", 0))
        own = values.get("seconds_per_sample", float("nan")) * n
        note = (
            f"**{folder.name}** on {self.model.link()}: {n} sample{'' if n == 1 else 's'}; success rate with its 95 % interval, "
            + ", ".join(
                f"n={k}: {format_rate(round(values[f'success_rate_n{k}'] * n), n)}"
                for k in range(NUM_SCENARIOS)
            )
            + f"; {values.get('labels_shown_mean', float('nan')):.2f} labels shown on average. "
            f"Duration: the attack's own time, {own:.1f} s (the attacks of one invocation take turns batch by "
            f"batch). Part of [the attack run]({run_link(self.experiment_id, self.parent)})."
        )
        self.client.set_tag(cid, NOTE_TAG, note[:NOTE_LIMIT])
        data = self.dataset[:2]
        runs.log_attack(
            self.client, cid, folder, attack, values, class_names, config, self.model.model_id, data
        )

    def finish(self, metrics: dict[str, dict[str, float]], header: str, avg_labels: float) -> None:
        """The success table (:func:`success_note`) as artifact and description, ``avg_labels`` as a metric; the
        writer's PID/host tag is dropped and the parent ends FINISHED."""
        table = success_note(metrics)
        text = f"{header}\n\nSuccess rate with its 95 % Wilson interval (%) per scenario n.\n\n{table}\n"
        self.client.log_text(self.parent, text, "success_table.md")
        links = ", ".join(
            f"[{name}]({run_link(self.experiment_id, cid)})" for name, cid in self.children.items()
        )
        # the table first: the run page shows the description's first lines until "Show more"
        note = (
            f"Success rate (%, with its 95 % Wilson interval) per scenario n; attack of {self.model.link()}.\n\n"
            f"{ui_table(table)}\n\n{header}.\n\nAttack runs: {links}.\n"
        )
        self.client.set_tag(self.parent, NOTE_TAG, note[:NOTE_LIMIT])
        metric = Metric("avg_labels", round(float(avg_labels), 4), int(time.time() * 1000), 0)
        runs.log_metrics_once(self.client, self.parent, [metric])
        self._release()
        self.client.set_terminated(self.parent, "FINISHED")

    def _release(self) -> None:
        """Drop the writer tag if it names this process: a PID and host mean nothing once the run has ended (and
        another live writer's tag is not ours to drop)."""
        if self.client.get_run(self.parent).data.tags.get(WRITER_TAG) == json.dumps(this_process()):
            self.client.delete_tag(self.parent, WRITER_TAG)

    def fail(self) -> None:
        """End an interrupted (KILLED) or failed (FAILED) run and its running children."""
        if self.parent is None:
            return
        status = "KILLED" if interrupt_exit(sys.exc_info()[1]) is not None else "FAILED"  # Ctrl-C, SIGTERM
        self._release()
        runs.close_all(self.client, self.parent, self.children, status)
