"""Where a run came from: MLflow's standard source tags, the model and data it used as run inputs, the fit run
behind a registered model, and links between runs that the MLflow UI renders.

The standard tags (``mlflow.source.name``, ``mlflow.source.git.commit``, ``mlflow.user``) are what the UI shows in
its Source / User columns; a model version's logged model as a run *input* is what makes the model's page list the
runs that used it.
"""

from __future__ import annotations

import getpass
import sys
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
from mlflow.data.code_dataset_source import CodeDatasetSource
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset
from mlflow.entities import Dataset, DatasetInput, InputTag, LoggedModelInput
from mlflow.types import Schema, TensorSpec

from mlattack.tracking.record import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, KIND_TAG, NOTE_TAG
from mlattack.tracking.store import git_commit, run_tags

LOGGED_MODEL_PREFIX = "models:/m-"


def source_tags(command: str | None = None) -> dict[str, str]:
    """MLflow's own source tags: the command, the source commit (``mlattack.git.dirty`` says whether the tree had
    changes), the user and the local source type."""
    commit = git_commit()
    tags = {
        "mlflow.source.name": command or " ".join(["mlattack", *sys.argv[1:2]]),
        "mlflow.source.type": "LOCAL",
        "mlflow.user": _user(),
    }
    if commit != "unknown":
        tags["mlflow.source.git.commit"] = commit.removesuffix("+dirty")
        tags["mlattack.git.dirty"] = str(commit.endswith("+dirty")).lower()
    return tags


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (containers)
        return "unknown"


def all_tags(seed: int | None = None, command: str | None = None) -> dict[str, str]:
    """Reproducibility tags (versions, host, seed) and the standard source tags; the old ``git.commit`` tag is
    replaced by ``mlflow.source.git.commit``."""
    tags = {k: v for k, v in run_tags(seed).items() if k != "git.commit"}
    return {**tags, **source_tags(command)}


@dataclass(frozen=True)
class ModelLineage:
    """What a model URI resolves to in the registry: the version's logged model and the fit run that made it."""

    uri: str
    reference: str  # name/version, or the path of a checkpoint
    name: str | None = None
    version: str | None = None
    model_id: str | None = None  # the logged model (MLflow 3) the version was registered from
    fit_run_id: str | None = None
    fit_experiment_id: str | None = None

    def params(self, prefix: str = "model") -> dict[str, str]:
        out = {f"{prefix}_uri": self.uri, f"{prefix}_identity": self.reference}
        if self.fit_run_id:
            out[f"{prefix}_fit_run_id"] = self.fit_run_id
        return out

    def link(self) -> str:
        """Markdown the UI renders: the registered version and the fit run, as links."""
        parts = [f"`{self.uri}`"]
        if self.name and self.version:
            parts.append(f"[{self.name} v{self.version}](#/models/{self.name}/versions/{self.version})")
        if self.fit_run_id and self.fit_experiment_id:
            parts.append(f"trained by [fit run]({run_link(self.fit_experiment_id, self.fit_run_id)})")
        return " · ".join(parts)


def run_link(experiment_id: str, run_id: str) -> str:
    return f"#/experiments/{experiment_id}/runs/{run_id}"


def model_lineage(client: mlflow.MlflowClient, uri: str, reference: str) -> ModelLineage:
    """The registry side of ``uri`` (``reference`` is its resolved ``name/version``); a file has none."""
    if not uri.startswith("models:/") or "/" not in reference:
        return ModelLineage(uri, reference)
    name, version = reference.rsplit("/", 1)
    try:
        mv = client.get_model_version(name, version)
    except mlflow.exceptions.MlflowException:
        return ModelLineage(uri, reference, name, version)
    model_id = mv.model_id or (
        mv.source[len("models:/") :] if str(mv.source).startswith(LOGGED_MODEL_PREFIX) else None
    )
    exp = None
    if mv.run_id:
        try:
            exp = client.get_run(mv.run_id).info.experiment_id
        except mlflow.exceptions.MlflowException:
            exp = None
    return ModelLineage(uri, reference, name, version, model_id, mv.run_id, exp)


def log_lineage_inputs(
    client: mlflow.MlflowClient,
    run_id: str,
    model: ModelLineage | None = None,
    dataset: tuple[str, str, str] | None = None,
    context: str = "attack",
) -> None:
    """The attacked (or judging) model, as its logged model, and the data split (name, digest, root) as the run's
    inputs; ``context`` is the split's role, shown beside it in the UI.

    Inputs are added once: a resumed run that has them already is left alone.
    """
    have = client.get_run(run_id).inputs
    models = []
    if model is not None and model.model_id:
        known = {m.model_id for m in (have.model_inputs or [])}
        if model.model_id not in known:
            models.append(LoggedModelInput(model.model_id))
    datasets = []
    if dataset is not None:
        name, digest, root = dataset
        if not any(d.dataset.name == name for d in (have.dataset_inputs or [])):
            ds = Dataset(name=name, digest=digest[:36], source_type="local", source=str(Path(root or ".")))
            datasets.append(DatasetInput(ds, tags=[InputTag("mlflow.data.context", context)]))
    if models or datasets:
        client.log_inputs(run_id, datasets=datasets or None, models=models or None)


def network_schemas(image_size: int, num_classes: int) -> tuple[Schema, Schema]:
    """(input, output) of a network as MLflow schemas: images (-1, 3, H, W) float32 in [0, 1] -> logits (-1, C)."""
    size = int(image_size)
    image = Schema([TensorSpec(np.dtype(np.float32), (-1, 3, size, size), "image")])
    return image, Schema([TensorSpec(np.dtype(np.float32), (-1, int(num_classes)), "logits")])


def training_dataset(name: str, digest: str, root: str | None, image_size: int, num_classes: int) -> Dataset:
    """A training split as an MLflow dataset (metadata only, no data): its name, content digest, where it is read
    from (the folder, or mlattack's code for the built-in source) and its schema: images and multi-hot targets."""
    source = (
        resolve_dataset_source(str(Path(root).resolve()))
        if root
        else CodeDatasetSource({"mlflow.source.name": f"mlattack.data ({name.split('/')[0]}, built in)"})
    )
    images, _ = network_schemas(image_size, num_classes)
    target = TensorSpec(np.dtype(np.float32), (-1, int(num_classes)), "target")
    schema = Schema([*images.inputs, target])
    return Dataset(**MetaDataset(source, name=name, digest=digest[:36], schema=schema).to_dict())


def log_training_input(client: mlflow.MlflowClient, run_id: str, dataset: Dataset) -> None:
    """The training split as the fit run's input (context ``train``), once: a resumed fit has it already."""
    if not any(d.dataset.name == dataset.name for d in (client.get_run(run_id).inputs.dataset_inputs or [])):
        client.log_inputs(
            run_id, datasets=[DatasetInput(dataset, [InputTag("mlflow.data.context", "train")])]
        )


def describe_report_run(
    client: mlflow.MlflowClient,
    run_id: str,
    source_experiment: str,
    parents: dict[str, list[str]],
    command: str = "mlattack report",
) -> None:
    """Give a report run the record every other run has: MLflow's source tags and user, the run kind, a
    description linking the attack runs it summarises (``parents``: parent run id -> its attacks in the report),
    and the UI's runs-table mode on its experiment."""
    run = client.get_run(run_id)
    exp = client.get_experiment(run.info.experiment_id)
    if EXPERIMENT_KIND_TAG not in exp.tags:
        client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    src = client.get_experiment_by_name(source_experiment)
    links = [
        f"- [{pid[:8]}]({run_link(src.experiment_id, pid)}): {', '.join(sorted(names))}"
        if src
        else f"- {pid}"
        for pid, names in parents.items()
    ]
    count = sum(len(v) for v in parents.values())
    note = (
        f"`{command}`: tables and figures of {count} attack runs from {len(parents)} `mlattack attack` "
        f"invocation{'' if len(parents) == 1 else 's'} in experiment `{source_experiment}` (their runs below; every row's run is in `runs.csv`). "
        "Open the artifacts for the report.\n\nAttack runs summarised:\n\n" + "\n".join(links) + "\n"
    )
    if len(note) > 7900:
        note = note[:7800].rsplit("\n", 1)[0] + "\n- … (the rest in `runs.csv`)\n"
    tags = {**all_tags(None, command), KIND_TAG: "report", NOTE_TAG: note}
    for key, value in tags.items():
        client.set_tag(run_id, key, value)
    if "git.commit" in run.data.tags:  # replaced by mlflow.source.git.commit, as on the other runs
        client.delete_tag(run_id, "git.commit")
