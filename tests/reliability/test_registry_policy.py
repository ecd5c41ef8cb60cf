"""Registry policy: ``@best`` moves only to a version whose validation mAP beats the current ``@best``'s (same
dataset and network); the newest version is always ``models:/<name>/latest`` (``@latest`` accepted)."""

from __future__ import annotations

import mlflow
import pytest
import torch

from mlattack.tracking.registry import (
    DIGEST_TAG,
    SCORE_TAG,
    RegisterBestModel,
    load_network,
    log_network,
    weights_digest,
)
from tests.evaluation.toy import LinearColourNet
from tests.reliability.helpers import keep_tracking_uri

NAME = "linearcolournet-toy"


def net_with_bias(value: float) -> LinearColourNet:
    net = LinearColourNet()
    with torch.no_grad():
        net.linear.bias.fill_(value)
    return net


def test_best_moves_only_to_a_better_validation_map_and_latest_always_moves(store, capsys):
    client = mlflow.MlflowClient(store)
    exp = client.create_experiment("fits")

    def fit(score, bias, dataset="toy", run_id=None) -> tuple[str, str]:
        run_id = run_id or client.create_run(exp).info.run_id
        with keep_tracking_uri():
            uri = log_network(net_with_bias(bias), run_id, store, NAME, 8, score=score, dataset=dataset)
        return uri.rsplit("/", 1)[1], run_id

    def best() -> str:
        return str(client.get_model_version_by_alias(NAME, "best").version)

    v1, run1 = fit(0.94, 0.1)
    assert best() == v1 == "1"
    v2, _ = fit(0.26, 0.2)  # a 3-epoch model does not displace a good one ...
    assert (
        best() == "1"
        and "stays at version 1: its validation mAP 0.2600 does not beat version 1's 0.9400"
        in (capsys.readouterr().out)
    )
    with keep_tracking_uri():  # ... but it is the newest version
        for uri in (f"models:/{NAME}/latest", f"models:/{NAME}@latest"):
            assert weights_digest(load_network(uri, store)) == weights_digest(net_with_bias(0.2)), uri
    fit(0.94, 0.3)  # a tie does not move it either
    assert best() == "1"
    fit(None, 0.4)  # nor a version without a score
    assert best() == "1"
    v5, _ = fit(0.95, 0.5)  # a better one does
    assert best() == v5 == "5"
    v6, _ = fit(0.10, 0.6, dataset="other")  # @best of another dataset under this name is no comparison
    assert best() == v6
    version = client.get_model_version(NAME, v5)
    assert float(version.tags[SCORE_TAG]) == 0.95 and version.tags[DIGEST_TAG] == weights_digest(
        net_with_bias(0.5)
    )
    # a fit that registers again (resumed after a kill while registering) gets its own version back, not a new one
    again, _ = fit(0.94, 0.1, run_id=run1)
    assert again == "1" and len(client.search_model_versions(f"name = '{NAME}'")) == 6


def test_latest_is_not_an_alias_one_can_set():
    with pytest.raises(ValueError, match="'latest' is MLflow's reserved name for the newest version"):
        RegisterBestModel(alias="latest")
