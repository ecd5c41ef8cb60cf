"""``kill -9`` of ``mlattack fit`` at each step of registering its model, then ``--ckpt_path last.ckpt``: the
resumed fit ends with exactly one registered version (the uninterrupted fit's weights) and one logged model (the
version's); what the kill left half-done is reused or removed, never left dangling beside it."""

from __future__ import annotations

import mlflow
import pytest
import torch

from tests.reliability import forked
from tests.reliability.helpers import keep_tracking_uri
from tests.reliability.jobs import REGISTRATION_STEPS, fit_args, fit_job

NAME = "mlgcn-synthetic"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, store_template) -> dict[str, torch.Tensor]:
    """The registered weights of a fit nobody killed."""
    import shutil

    from mlattack.tracking.registry import load_network

    folder = tmp_path_factory.mktemp("reference")
    shutil.copy(store_template, folder / "mlflow.db")
    store = f"sqlite:///{folder / 'mlflow.db'}"
    assert forked.finish(forked.start(fit_job, store, fit_args(folder / "out", 1)), 600) == 0
    with keep_tracking_uri():
        return load_network(f"models:/{NAME}@best", store).state_dict()


@pytest.mark.parametrize("step", REGISTRATION_STEPS)
def test_a_fit_killed_while_registering_resumes_to_one_version_and_one_logged_model(
    tmp_path, fresh_store, uninterrupted, step
):
    from mlattack.tracking.registry import MODEL_VERSIONS_TAG, load_network

    store, out, marker = fresh_store(tmp_path / "store"), tmp_path / "out", tmp_path / "killed.json"
    child = forked.start(fit_job, store, fit_args(out, 1), str(marker), step)
    assert forked.finish(child, 600) == -9 and marker.is_file()
    (last,) = out.rglob("last.ckpt")
    assert forked.finish(forked.start(fit_job, store, fit_args(out, 1, ("--ckpt_path", str(last)))), 600) == 0

    client = mlflow.MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("mlattack").experiment_id])
    assert run.info.status == "FINISHED"
    (version,) = client.search_model_versions(f"name = '{NAME}'")  # registered once
    assert str(version.version) == "1" and version.run_id == run.info.run_id
    assert str(client.get_model_version_by_alias(NAME, "best").version) == "1"
    with keep_tracking_uri():
        weights = load_network(f"models:/{NAME}/1", store).state_dict()
    assert weights.keys() == uninterrupted.keys()
    assert all(torch.equal(weights[k], uninterrupted[k]) for k in weights)
    # one logged model: the version's, READY, naming its version; the run's outputs name only it
    (model,) = client.search_logged_models([run.info.experiment_id])
    assert version.source == f"models:/{model.model_id}" and str(model.status) == "READY"
    assert model.tags[MODEL_VERSIONS_TAG] == f'[{{"name": "{NAME}", "version": "1"}}]'
    assert [o.model_id for o in client.get_run(run.info.run_id).outputs.model_outputs] == [model.model_id]
