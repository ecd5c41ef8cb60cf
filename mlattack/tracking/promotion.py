"""Which version ``@best`` names: the alias policy of the model registry (see :mod:`mlattack.tracking.registry`)."""

from __future__ import annotations

import logging

import mlflow

log = logging.getLogger(__name__)

DEFAULT_ALIAS = "best"
SCORE_TAG, DIGEST_TAG = "mlattack.val_mAP", "mlattack.weights_digest"
DATASET_TAG, NETWORK_TAG = "mlattack.dataset", "mlattack.network"
EPOCH_TAG, CLASSES_TAG, IMAGE_SIZE_TAG = "mlattack.epoch", "mlattack.class_names", "mlattack.image_size"


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
