"""Registry bookkeeping: which version ``@best`` names (the alias policy, see :mod:`mlattack.tracking.registry`)
and the descriptions of registered models and versions."""

from __future__ import annotations

import json
import logging

import mlflow
from mlflow.entities import LoggedModelOutput

log = logging.getLogger(__name__)

DEFAULT_ALIAS = "best"
SCORE_TAG, DIGEST_TAG = "mlattack.val_mAP", "mlattack.weights_digest"
DATASET_TAG, NETWORK_TAG = "mlattack.dataset", "mlattack.network"
EPOCH_TAG, CLASSES_TAG, IMAGE_SIZE_TAG = "mlattack.epoch", "mlattack.class_names", "mlattack.image_size"
#: on a logged model: the versions registered from it (what its page in the UI reads)
MODEL_VERSIONS_TAG = "mlflow.modelVersions"


def score_of(client: mlflow.MlflowClient, version) -> float | None:
    """A version's validation mAP: its tag, else its run's ``best/val_mAP`` (versions of older mlattack)."""
    if SCORE_TAG in version.tags:
        return float(version.tags[SCORE_TAG])
    try:
        value = client.get_run(version.run_id).data.metrics.get("best/val_mAP") if version.run_id else None
    except mlflow.exceptions.MlflowException:
        return None
    return None if value is None else float(value)


def promote(
    client: mlflow.MlflowClient,
    name: str,
    version: str,
    score: float | None,
    dataset: str | None,
    network: str,
    alias: str = DEFAULT_ALIAS,
) -> bool:
    """Point ``@alias`` at ``version`` if the policy says so; True if it names it now."""
    try:
        current = client.get_model_version_by_alias(name, alias)
    except mlflow.exceptions.MlflowException:
        current = None
    if current is not None and str(current.version) == str(version):
        return True
    keep = None
    if current is not None:
        cur_dataset, cur_network = current.tags.get(DATASET_TAG), current.tags.get(NETWORK_TAG)
        other_family = cur_network not in (None, network) or (
            dataset is not None and cur_dataset not in (None, dataset)
        )
        best = score_of(client, current)
        if other_family:
            log.warning(
                "@%s of %s was version %s of another dataset or network; replacing it",
                alias,
                name,
                current.version,
            )
        elif best is not None and score is None:
            keep = f"version {version} has no validation mAP to compare with version {current.version}'s {best:.4f}"
        elif best is not None and score <= best:
            keep = f"its validation mAP {score:.4f} does not beat version {current.version}'s {best:.4f}"
    if keep is not None:
        print(f"models:/{name}@{alias} stays at version {current.version}: {keep}")
        return False
    client.set_registered_model_alias(name, alias, str(version))
    return True


def ensure_registered_model(client: mlflow.MlflowClient, name: str, tags: dict) -> None:
    note = (
        f"{tags[NETWORK_TAG]} networks trained on {tags.get(DATASET_TAG, 'its dataset')} by `mlattack fit` (image "
        f"in [0, 1] -> logits). `@best` names the version with the highest validation mAP; attack it with "
        f"`mlattack attack --model models:/{name}@best`. The attack and transfer runs that judged a version are listed "
        "on its logged model's page (the version's Source Model link): their metrics, by source run."
    )
    try:
        current = client.get_registered_model(name)
    except mlflow.exceptions.MlflowException:
        try:
            client.create_registered_model(name, description=note)
        except mlflow.exceptions.MlflowException:  # created at the same moment by another process
            pass
        return
    if not current.description:
        client.update_registered_model(name, description=note)


def version_note(net: object, tags: dict, run_id: str, model_page: str | None = None) -> str:
    """A version's (and its logged model's) description; ``model_page`` links the logged model's page, which
    lists the runs that attacked the version or judged transferred examples on it (the registry page does not)."""
    score = f"validation mAP {float(tags[SCORE_TAG]):.4f}" if SCORE_TAG in tags else "no validation score"
    epoch = f" (epoch {tags[EPOCH_TAG]})" if EPOCH_TAG in tags else ""
    return (
        f"{type(net).__name__} on {tags.get(DATASET_TAG, '?')}, {tags[IMAGE_SIZE_TAG]} px: {score}{epoch}; "
        f"weights digest {tags[DIGEST_TAG]}; trained by run {run_id}. Stored without pickle (network.pt read "
        "with weights_only=True + network.json)."
        + (f" Its attack and transfer runs: [the logged model's page]({model_page})." if model_page else "")
    )


def unregistered_logged_model(client: mlflow.MlflowClient, run_id: str, name: str, digest: str) -> str | None:
    """What a registration killed before its version existed left of run ``run_id``'s logged model ``name``: one
    whose files are whole (READY is set after the upload) and hold these weights is returned, to be registered
    instead of logging another; one whose upload never finished (PENDING) is deleted (``mlflow gc`` removes its
    files). Either way a resumed fit ends with one logged model per version, none dangling."""
    run = client.get_run(run_id)
    found = client.search_logged_models(
        [run.info.experiment_id], filter_string=f"source_run_id = '{run_id}' AND name = '{name}'"
    )
    reuse = None
    for model in found:
        if MODEL_VERSIONS_TAG in model.tags:
            continue
        if str(model.status) == "READY":
            if reuse is None and model.tags.get(DIGEST_TAG) == digest:
                reuse = model.model_id
        else:
            log.warning(
                "deleting logged model %s of run %s: its upload was cut short", model.model_id, run_id
            )
            client.delete_logged_model(model.model_id)
    outputs = run.outputs.model_outputs if run.outputs is not None else []
    if reuse is not None and reuse not in {o.model_id for o in outputs}:
        client.log_outputs(run_id, [LoggedModelOutput(reuse, step=0)])
    return reuse


def mark_registered(client: mlflow.MlflowClient, source: str, name: str, version: str) -> None:
    """Name version ``version`` on the logged model it came from (``source`` ``models:/<model id>``), also when a
    kill came between registering it and tagging."""
    model_id = source.removeprefix("models:/") if source.startswith("models:/m-") else None
    if model_id is not None:
        client.set_logged_model_tags(
            model_id, {MODEL_VERSIONS_TAG: json.dumps([{"name": name, "version": str(version)}])}
        )
