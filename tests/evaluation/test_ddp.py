"""`mlattack attack` and `mlattack fit` under Lightning DDP with 2 CPU processes (gloo)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import torch
import yaml

from mlattack import attacks
from mlattack.attacks import BIM, MIFGSM
from mlattack.data.datamodule import MultiLabelDataModule
from mlattack.evaluation.batches import group_share
from mlattack.evaluation.chunks import loader_batch
from mlattack.evaluation.runner import AttackSpec, run_attacks
from mlattack.tracking.record import CURVE, mlflow_metric
from mlattack.tracking.registry import log_network
from tests.evaluation.toy import B, LinearColourNet
from tests.reliability.helpers import computed, computed_metrics

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


# -- fast mode: continuous batching with per-sample random starts under DDP ----------------------------------------
#: 36 samples in loader chunks of 16 (batch 2 x 8): rank 0 attacks chunks 0 and 2, rank 1 chunk 1, so every chunk but
#: the first runs after a different history than in one process (and rank 1's BIM share is 4 samples, not 16)
FAST_N, FAST_BATCH, FAST_ITER = 36, 2, 12
FAST_ATTACKS = [
    {
        "attack": {
            "class_path": "mlattack.attacks.PGD",
            "init_args": {"eps": 0.5, "nb_iter": FAST_ITER, "eps_iter": 0.05, "rand_init": True},
        }
    },
    {
        "attack": {
            "class_path": "mlattack.attacks.BIM",
            "init_args": {"eps": 0.5, "nb_iter": FAST_ITER, "eps_iter": 0.05},
        },
        "num_samples": 20,
    },
]


@pytest.fixture
def reachable_toy_model(store, toy_source):
    """The toy model with every bias raised by 0.5: the all-labels target then lies within reach of many samples,
    so fast mode's early stop fires at varied steps and the scheduler refills freed slots (with the toy model's
    own biases no sample reaches it and every batch would run its full budget)."""
    client = mlflow.MlflowClient(store)
    run = client.create_run(client.create_experiment("models"))
    net = LinearColourNet()
    with torch.no_grad():
        net.linear.bias.copy_(B + 0.5)
    uri = log_network(net, run.info.run_id, store, "linearcolournet-reachable", image_size=8)
    client.set_terminated(run.info.run_id)
    return uri


def records(output_dir: Path, name: str) -> tuple[dict[int, dict], dict[str, list[int]]]:
    """Every record file of attack ``name`` under ``output_dir``: the computed fields by position (each position
    once over all files), and the positions of each file."""
    out, files = {}, {}
    for path in sorted([*output_dir.rglob(f"{name}.jsonl"), *output_dir.rglob(f"{name}.rank*.jsonl")]):
        recs = [computed(json.loads(line)) for line in path.read_text().splitlines()]
        files[path.name] = [r["position"] for r in recs]
        for r in recs:
            assert r["position"] not in out, (name, r["position"])
            out[r["position"]] = r
    return out, files


def child_runs(client: mlflow.MlflowClient, experiment: str) -> dict:
    exp = client.get_experiment_by_name(experiment)
    (parent,) = client.search_runs([exp.experiment_id], filter_string="tags.`mlflow.parentRunId` IS NULL")
    query = f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    return {c.info.run_name: c for c in client.search_runs([exp.experiment_id], filter_string=query)}


def test_fast_mode_under_ddp_equals_single_process(tmp_path, store, reachable_toy_model):
    """Random starts are seeded by (seed, selection position): a rank's share, the chunk a sample lands in and what
    its process attacked before must not change any sample's result."""
    data = {"source": "toy", "image_size": 8, "batch_size": 2, "num_workers": 0, "options": {"n": 96}}
    specs = [
        AttackSpec(
            attack=getattr(attacks, a["attack"]["class_path"].rsplit(".", 1)[1])(**a["attack"]["init_args"]),
            num_samples=a.get("num_samples"),
        )
        for a in FAST_ATTACKS
    ]
    common = {"num_samples": FAST_N, "batch_size": FAST_BATCH, "mode": "fast"}
    run_attacks(
        reachable_toy_model, MultiLabelDataModule(**data), specs, output_dir=str(tmp_path / "single"),
        progress_bar=False, accelerator="cpu", experiment="single", **common,
    )  # fmt: skip
    cfg = tmp_path / "attack.yaml"
    cfg.write_text(yaml.safe_dump({**common, "data": data, "attacks": FAST_ATTACKS}))
    cmd = [sys.executable, str(DRIVER), "attack", "--config", str(cfg), "--model", reachable_toy_model,
           "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp", "--experiment", "ddp",
           "--output_dir", str(tmp_path / "ddp")]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=env_for(store), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    chunk = loader_batch(FAST_BATCH, fast=True)
    for name, n in (("PGD", FAST_N), ("BIM", 20)):
        single, single_files = records(tmp_path / "single", name)
        ddp, ddp_files = records(tmp_path / "ddp", name)
        assert single_files == {f"{name}.jsonl": list(range(n))}
        # the layout differs: each rank attacked its whole chunks (in its own order), not the single process's
        assert {k: sorted(v) for k, v in ddp_files.items()} == {
            f"{name}.jsonl": group_share(n, chunk, 0, 2),
            f"{name}.rank1.jsonl": group_share(n, chunk, 1, 2),
        }
        iterations = [r["iterations"] for r in single.values()]
        assert min(iterations) < FAST_ITER and FAST_ITER in iterations  # early stop fired for some, not all
        assert sorted(ddp) == sorted(single)
        for p, want in single.items():
            got = ddp[p]
            floats = {k for k, v in want.items() if isinstance(v, float)}
            assert {k: v for k, v in got.items() if k not in floats} == {
                k: v for k, v in want.items() if k not in floats
            }, (name, p)
            assert {k: got[k] for k in floats} == pytest.approx({k: want[k] for k in floats}, nan_ok=True), (
                name,
                p,
            )
    client = mlflow.MlflowClient(store)
    single_runs, ddp_runs = child_runs(client, "single"), child_runs(client, "ddp")
    assert sorted(ddp_runs) == sorted(single_runs) == ["BIM", "PGD"]
    for name, run in single_runs.items():
        want, got = computed_metrics(run.data.metrics), computed_metrics(ddp_runs[name].data.metrics)
        assert sorted(got) == sorted(want)
        assert got == pytest.approx(want, rel=1e-9, abs=1e-12, nan_ok=True), name
        curve = {m.step: m.value for m in client.get_metric_history(run.info.run_id, CURVE)}
        ddp_curve = [(m.step, m.value) for m in client.get_metric_history(ddp_runs[name].info.run_id, CURVE)]
        assert len(ddp_curve) == len(curve) == 8  # one value per scenario, logged once (rank 0)
        assert dict(ddp_curve) == pytest.approx(curve, rel=1e-9, abs=1e-12)
