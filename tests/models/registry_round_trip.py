"""One tiny ``mlattack fit`` of a demo config, then the registered network loaded back every way the loop loads it."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
import torch

from mlattack.cli import lightning_main
from mlattack.tracking.registry import load_network

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def fit_register_and_reload(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, config: str, name: str, extra: tuple[str, ...] = ()
) -> None:
    """Fit ``config`` for one epoch on 48 built-in images (6 labels, 32 px), then check that ``models:/name/N``,
    ``models:/name@best`` and the checkpoint all give the trained network's logits."""
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    args = [
        "fit", "--config", str(CONFIGS / config),
        "--trainer.max_epochs", "1", "--trainer.default_root_dir", str(tmp_path / "out"),
        "--trainer.enable_progress_bar", "false",
        "--data.image_size", "32", "--data.batch_size", "16", "--data.num_workers", "0",
        "--data.options", '{"num_classes": 6, "num_samples": 48}', *extra,
    ]  # fmt: skip
    cli = lightning_main(args)
    client = mlflow.MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("mlattack").experiment_id])
    assert run.info.status == "FINISHED" and 0.0 <= run.data.metrics["val/mAP"] <= 1.0
    assert (
        run.data.metrics["train/loss"] == run.data.metrics["train/loss"]
    )  # a real, finite training step ran
    version = client.get_model_version_by_alias(name, "best").version
    ckpt = cli.trainer.checkpoint_callback.best_model_path
    nets = [load_network(u, store) for u in (f"models:/{name}/{version}", f"models:/{name}@best", ckpt)]
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        outs = [net(x) for net in nets]
        trained = cli.model.net.eval()(x)
    assert outs[0].shape == (3, 6)
    for out in outs[1:]:
        assert torch.equal(outs[0], out)
    torch.testing.assert_close(outs[0], trained, rtol=0, atol=1e-6)
