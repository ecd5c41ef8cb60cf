"""The fit run's record: one param separator, no duplicates or private keys, Trainer settings, charts against the
epoch, descriptions and a tagged model version."""

import mlflow
import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint

from mlattack.models.module import MultiLabelClassifier
from mlattack.tracking.callbacks import MLflowRunContext
from mlattack.tracking.logger import MLflowLogger, flat_params
from mlattack.tracking.registry import RegisterBestModel
from tests.evaluation.toy import LinearColourNet


def test_params_fold_jsonargparse_levels_into_one_separator():
    hp = {
        "net": {"class_path": "mlattack.models.mlgcn.MLGCN", "init_args": {"tau": 0.4, "p": 0.25}},
        "optimizer": {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.1}},
        "_instantiator": "lightning.pytorch.cli.instantiate_module",
        "data.train.num_images": 48,
        "options": {},
    }
    assert flat_params(hp) == {
        "net": "mlattack.models.mlgcn.MLGCN", "net/tau": "0.4", "net/p": "0.25", "optimizer": "torch.optim.SGD",
        "optimizer/lr": "0.1", "data/train/num_images": "48", "options": "{}",
    }  # fmt: skip


def test_a_fit_run_reads_in_the_ui(tmp_path, store, toy_data):
    logger = MLflowLogger(experiment_name="fit", tracking_uri=store, run_name="linear-toy-fit")
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="val/mAP", mode="max")
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=logger, enable_progress_bar=False,
                         callbacks=[ckpt, MLflowRunContext(seed=7), RegisterBestModel()],
                         enable_model_summary=False)  # fmt: skip
    trainer.fit(MultiLabelClassifier(LinearColourNet()), datamodule=toy_data)
    client = mlflow.MlflowClient(store)
    run = client.get_run(logger.run_id)
    params, tags = run.data.params, run.data.tags
    assert not any("." in k or k.startswith("_") for k in params), sorted(params)
    assert params["trainer/max_epochs"] == "2" and params["trainer/precision"] == "32-true"
    assert params["trainer/devices"] == "1" and "data/train/num_images" in params
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "val/mAP")) == [0, 1]  # epochs
    assert tags["mlflow.source.name"] == "mlattack fit" and tags["mlflow.user"] and tags["seed"] == "7"
    assert (
        "best val mAP" in tags["mlflow.note.content"]
        and "models:/linearcolournet-toy/1" in tags["mlflow.note.content"]
    )
    mv = client.get_model_version("linearcolournet-toy", "1")
    assert mv.tags["mlattack.epoch"] in ("0", "1") and mv.tags["mlattack.class_names"].startswith('["c0"')
    assert float(mv.tags["mlattack.val_mAP"]) == run.data.metrics["best/val_mAP"]
    assert logger.tracking_uri == store
