"""`mlattack attack` and `mlattack fit` under Lightning DDP with 2 CPU processes (gloo)."""

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import yaml

from mlattack.attacks import BIM, MIFGSM
from mlattack.data.datamodule import MultiLabelDataModule
from mlattack.evaluation.runner import AttackSpec, run_attacks
from mlattack.tracking.record import mlflow_metric

ROOT = Path(__file__).resolve().parents[2]
DRIVER = ROOT / "tests" / "evaluation" / "ddp_driver.py"
ATTACKS = [
    {"config": "configs/attack/fgsm.yaml"},
    {
        "attack": {
            "class_path": "mlattack.attacks.BIM",
            "init_args": {"eps": 0.2, "nb_iter": 4, "eps_iter": 0.05},
        }
    },
    {
        "attack": {
            "class_path": "mlattack.attacks.MIFGSM",
            "init_args": {"eps": 0.2, "nb_iter": 4, "eps_iter": 0.05},
        },
        "num_samples": 5,
    },
]


def env_for(store: str) -> dict:
    env = dict(os.environ, MLFLOW_TRACKING_URI=store, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    env.pop("LOCAL_RANK", None)
    return env


def test_attack_under_ddp_equals_single_process(tmp_path, store, toy_source, registered_toy_model):
    data = {"source": "toy", "image_size": 8, "batch_size": 2, "num_workers": 0}
    same_attacks = [
        AttackSpec(config="configs/attack/fgsm.yaml"),
        AttackSpec(attack=BIM(eps=0.2, nb_iter=4, eps_iter=0.05)),
        AttackSpec(attack=MIFGSM(eps=0.2, nb_iter=4, eps_iter=0.05), num_samples=5),
    ]
    single = run_attacks(
        registered_toy_model,
        MultiLabelDataModule(**data),
        same_attacks,
        num_samples=8,
        batch_size=2,
        output_dir=str(tmp_path / "single"),
        progress_bar=False,
        accelerator="cpu",
        experiment="single",
    )
    cfg = tmp_path / "attack.yaml"
    cfg.write_text(yaml.safe_dump({"num_samples": 8, "batch_size": 2, "data": data, "attacks": ATTACKS}))
    cmd = [
        sys.executable,
        str(DRIVER),
        "attack",
        "--config",
        str(cfg),
        "--model",
        registered_toy_model,
        "--accelerator",
        "cpu",
        "--devices",
        "2",
        "--strategy",
        "ddp",
        "--experiment",
        "ddp",
        "--output_dir",
        str(tmp_path / "ddp"),
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=env_for(store), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    client = mlflow.MlflowClient(store)
    exp = client.get_experiment_by_name("ddp")
    parents = client.search_runs([exp.experiment_id], filter_string="tags.`mlflow.parentRunId` IS NULL")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"  # one run, logged by rank 0 only
    children = client.search_runs(
        [exp.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parents[0].info.run_id}'"
    )
    assert sorted(c.info.run_name for c in children) == ["BIM", "FGSM", "MIFGSM"]
    for child in children:
        history = client.get_metric_history(child.info.run_id, "curve/success_vs_n")
        assert sorted(m.step for m in history) == list(range(8))  # one set of metrics, not one per rank
        for key, value in single.metrics[child.info.run_name].items():
            if key not in (
                "seconds_per_sample",
                "peak_memory_mb",
            ):  # measured, not computed: differ per process
                assert child.data.metrics[mlflow_metric(key)] == pytest.approx(value, abs=1e-9), (
                    child.info.run_name,
                    key,
                )
    # both ranks attacked: rank 1 wrote its own record file; together they cover every sample exactly once
    files = sorted(p.name for p in (tmp_path / "ddp").rglob("FGSM*.jsonl"))
    assert files == ["FGSM.jsonl", "FGSM.rank1.jsonl"]


def test_fit_under_ddp_logs_one_run(tmp_path, store):
    cmd = [
        sys.executable,
        str(DRIVER),
        "fit",
        "--config",
        str(ROOT / "configs" / "demo.yaml"),
        "--trainer.max_epochs",
        "2",
        "--trainer.accelerator",
        "cpu",
        "--trainer.devices",
        "2",
        "--trainer.strategy",
        "ddp",
        "--trainer.default_root_dir",
        str(tmp_path / "out"),
        "--trainer.enable_progress_bar",
        "false",
        "--data.image_size",
        "32",
        "--data.batch_size",
        "8",
        "--data.num_workers",
        "0",
        "--data.options",
        '{"num_classes": 6, "num_samples": 48}',
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=env_for(store), capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    client = mlflow.MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("mlattack").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    history = client.get_metric_history(runs[0].info.run_id, "val/mAP")
    assert len(history) == 2  # one value per epoch, logged once (rank 0)
    assert str(client.get_model_version_by_alias("mlgcn-synthetic", "best").version) == "1"
