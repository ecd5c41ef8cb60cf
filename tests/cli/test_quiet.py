"""Quiet output: library banners, advertising and internal deprecation notices are dropped where they are emitted,
and nothing else from the same loggers is."""

import logging
import warnings

from mlattack.console import quiet_output


def test_banner_and_tip_are_dropped_and_other_lightning_messages_kept(caplog):
    quiet_output()
    rank_zero = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    with caplog.at_level(logging.INFO):
        rank_zero.info("GPU available: False, used: False")
        rank_zero.info("TPU available: False, using: 0 TPU cores")
        rank_zero.info(
            "💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger]"
        )
        rank_zero.info("Restoring states from the checkpoint path at last.ckpt")
        logging.getLogger("lightning_fabric.utilities.seed").info("Seed set to 123")
        logging.getLogger("pytorch_lightning.loggers.mlflow").warning("Experiment with name x not found.")
        logging.getLogger("mlflow.store.db.utils").info("Creating initial MLflow database tables...")
        logging.getLogger("mlflow.tracking").warning("a real MLflow warning")
    assert [r.getMessage() for r in caplog.records] == [
        "Restoring states from the checkpoint path at last.ckpt",
        "a real MLflow warning",
    ]


def test_pytree_deprecation_is_filtered_and_other_future_warnings_are_not():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        quiet_output()
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use ...", FutureWarning, stacklevel=1)
        warnings.warn("something else will change", FutureWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["something else will change"]
