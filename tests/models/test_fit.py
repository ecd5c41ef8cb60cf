"""`mlattack fit` end to end on the built-in dataset: metrics in MLflow, registry, reload, resume, failure status."""

from pathlib import Path

import mlflow
import pytest
import torch

from mlattack.cli import lightning_main
from mlattack.cli import run as run_mlattack
from mlattack.models.mlgcn import MLGCN
from mlattack.models.module import MultiLabelClassifier
from mlattack.tracking.registry import load_network

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
METRICS = ("val/mAP", "val/hamming", "val/ranking_loss", "val/f1_micro", "val/f1_macro")


def tiny_args(tmp_path, net: str, epochs: int = 1, extra=()):
    opts = '{"num_classes": 6, "num_samples": 48}'
    args = [
        "fit",
        "--config",
        str(CONFIGS / "demo.yaml"),
        "--trainer.max_epochs",
        str(epochs),
        "--trainer.default_root_dir",
        str(tmp_path / "out"),
        "--trainer.enable_progress_bar",
        "false",
        "--data.image_size",
        "32",
        "--data.batch_size",
        "16",
        "--data.num_workers",
        "0",
        "--data.options",
        opts,
    ]
    if net == "mlliw":
        args += ["--model", str(CONFIGS / "model" / "mlliw.yaml"), "--model.net.init_args.backbone", "tiny"]
    return args + list(extra)


@pytest.fixture
def store(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


def only_run(uri):
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("mlattack").experiment_id])
    assert len(runs) == 1
    return client, runs[0]


@pytest.mark.parametrize("net", ["mlgcn", "mlliw"])
def test_fit_logs_metrics_registers_and_reloads_identically(tmp_path, store, net):
    cli = lightning_main(tiny_args(tmp_path, net))
    client, run = only_run(store)
    assert run.info.status == "FINISHED"
    assert run.info.run_name.startswith(f"{net}-synthetic-fit-")
    for key in METRICS:
        assert key in run.data.metrics, key
    assert 0.0 <= run.data.metrics["val/mAP"] <= 1.0
    assert run.data.params["data/train/num_images"] == "48"
    assert run.data.params["net"].endswith(net.upper())
    assert run.data.tags["seed"] == "123" and "mlflow.source.git.commit" in run.data.tags
    assert "config.yaml" in [a.path for a in client.list_artifacts(run.info.run_id)]
    # registered under <model>-<dataset> with the @best alias; every way of loading gives the same network
    name = f"{net}-synthetic"
    version = client.get_model_version_by_alias(name, "best").version
    x = torch.rand(3, 3, 32, 32)
    ckpt = cli.trainer.checkpoint_callback.best_model_path
    nets = [load_network(u, store) for u in (f"models:/{name}/{version}", f"models:/{name}@best", ckpt)]
    with torch.no_grad():
        outs = [n(x) for n in nets]
        trained = cli.model.net.eval()(x)
    assert outs[0].shape == (3, 6)
    for o in outs[1:]:
        assert torch.equal(outs[0], o)
    assert torch.allclose(outs[0], trained, atol=1e-6)  # the best epoch is the only epoch here
    if (
        net == "mlgcn"
    ):  # a registry URI works wherever a checkpoint does: `mlattack test --ckpt_path models:/...`
        tested = run_mlattack(["test", *tiny_args(tmp_path, net)[1:], "--ckpt_path", f"models:/{name}@best"])
        with torch.no_grad():
            assert torch.equal(tested.model.net.eval()(x), outs[0])
        runs = client.search_runs([run.info.experiment_id], filter_string="tags.`mlattack.stage` = 'test'")
        assert len(runs) == 1 and 0.0 <= runs[0].data.metrics["test/mAP"] <= 1.0


def test_resume_continues_in_the_same_run(tmp_path, store):
    first = lightning_main(tiny_args(tmp_path, "mlgcn", epochs=1))
    last = Path(first.trainer.checkpoint_callback.last_model_path)
    assert last.is_file()
    lightning_main(tiny_args(tmp_path, "mlgcn", epochs=2, extra=["--ckpt_path", str(last)]))
    client, run = only_run(store)
    history = client.get_metric_history(run.info.run_id, "val/mAP")
    assert sorted(m.step for m in history) == sorted({m.step for m in history}) and len(history) == 2
    assert run.info.status == "FINISHED"


def test_crash_marks_the_run_failed(tmp_path, store):
    crash = ["--trainer.callbacks+=tests.models.crash.CrashDuringTraining"]
    with pytest.raises(RuntimeError, match="simulated crash"):
        lightning_main(tiny_args(tmp_path, "mlgcn", extra=crash))
    _, run = only_run(store)
    assert run.info.status == "FAILED"


def test_the_learning_rate_is_the_optimizers_alone():
    """model.optimizer.init_args.lr is the one setting: the head trains at it, the trunk at it x backbone_lr_scale."""
    net = MLGCN(6, backbone="tiny", hidden_dim=8)
    module = MultiLabelClassifier(net, backbone_lr_scale=0.1, optimizer=lambda p: torch.optim.SGD(p, lr=0.3))
    opt = module.configure_optimizers()
    assert {g["name"]: g["lr"] for g in opt.param_groups} == {"backbone": pytest.approx(0.03), "gcn": 0.3}
    # from the command line: the optimiser's lr reaches every group, and `model.lr` no longer exists
    args = tiny_args(Path("unused"), "mlgcn")[1:] + ["--model.optimizer.init_args.lr", "0.05"]
    cli = lightning_main(args, run=False)
    opt = cli.model.configure_optimizers()["optimizer"]
    assert [g["lr"] for g in opt.param_groups] == [0.05, 0.05]  # demo.yaml: backbone_lr_scale 1.0
    assert "lr" not in cli.config.model
