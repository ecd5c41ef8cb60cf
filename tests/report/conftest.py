"""A real tracking store for the report tests: tiny attack runs (and a budget sweep) of two toy networks.

Built once per module (the attacks take a few seconds) with the real runner, the real registry and SQLite.
"""

import mlflow
import pytest
import torch

from mlattack.attacks import BIM, FGSM, MIFGSM
from mlattack.data.datamodule import SOURCES, MultiLabelDataModule
from mlattack.evaluation.runner import AttackSpec, run_attacks
from mlattack.tracking.registry import log_network
from tests.evaluation.toy import LinearColourNet
from tests.report.toy_models import ShiftedColourNet

CLEAN_MAP = {"linear-toy": 0.81, "shifted-toy": 0.67}  # what each "fit" run logged as val/mAP


def _register(uri: str, net: torch.nn.Module, name: str) -> str:
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("models")
    exp_id = exp.experiment_id if exp else client.create_experiment("models")
    run = client.create_run(exp_id)
    client.log_metric(run.info.run_id, "val/mAP", CLEAN_MAP[name])
    model_uri = log_network(net, run.info.run_id, uri, name, image_size=8)
    client.set_terminated(run.info.run_id)
    return model_uri


@pytest.fixture(scope="module")
def populated_store(tmp_path_factory):
    """(tracking uri, {network: AttackReport}) with FGSM/BIM/MI-FGSM on both networks and an FGSM eps sweep on one."""
    tmp = tmp_path_factory.mktemp("report-store")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setitem(SOURCES, "toy", ("tests.evaluation.toy", "ToyColours", False))
        data = MultiLabelDataModule(source="toy", image_size=8, batch_size=4, num_workers=0)
        specs = [
            AttackSpec(attack=FGSM(eps=0.3)),
            AttackSpec(attack=BIM(eps=0.2, nb_iter=4, eps_iter=0.05)),
            AttackSpec(attack=MIFGSM(eps=0.2, nb_iter=4, eps_iter=0.05), num_samples=6),
        ]
        sweep = [AttackSpec(config="configs/attack/fgsm.yaml", sweep={"eps": [0.02, 0.1, 0.3]})]
        reports = {}
        for net, name, extra in (
            (LinearColourNet(), "linear-toy", sweep),
            (ShiftedColourNet(), "shifted-toy", []),
        ):
            model = _register(uri, net, name)
            reports[type(net).__name__.lower()] = run_attacks(
                model,
                data,
                specs + extra,
                num_samples=10,
                output_dir=str(tmp / "out"),
                panel_samples=1,
                progress_bar=False,
                accelerator="cpu",
                tracking_uri=uri,
            )
        yield uri, reports, tmp
