"""Lightning's MLflow logger with a fit-run record that reads in the MLflow UI.

- Params: one separator (``/``), no private keys (``_instantiator``), and jsonargparse's ``class_path`` /
  ``init_args`` levels folded away: ``optimizer = torch.optim.SGD``, ``optimizer/lr = 0.1`` instead of
  ``optimizer/class_path`` and ``optimizer/init_args/lr``. A param already on the run is not logged again.
- Metrics: logged with ``step = epoch`` whenever Lightning reports the epoch, so every chart's x axis counts
  epochs (all of mlattack's training metrics are per epoch).
- A fit interrupted by Ctrl-C or SIGTERM ends KILLED (Lightning says "failed"): it is resumed with ``--ckpt_path``,
  not broken.
- A public ``tracking_uri``. A resumed fit passes the run's id as the logger's own ``run_id`` argument
  (:mod:`mlattack.cli.lightning`), so nothing here touches the parent class's private attributes.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from mlflow.entities import Param
from pytorch_lightning.loggers import MLFlowLogger
from pytorch_lightning.utilities import rank_zero_only

from mlattack.errors import interrupt_exit

MAX_PARAM_LENGTH = 500


def flat_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested hyperparameters as flat ``a/b`` params (see module docstring)."""
    out: dict[str, str] = {}
    for key, value in params.items():
        key = str(key).replace(".", "/")
        if key.startswith("_"):
            continue
        if hasattr(value, "as_dict"):  # a jsonargparse Namespace
            value = value.as_dict()
        if key == "init_args" and isinstance(value, Mapping):
            out.update(flat_params(value, prefix))
            continue
        name = prefix.rstrip("/") if key == "class_path" else f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flat_params(value, f"{name}/"))
        else:
            out[name or key] = str(value)[:MAX_PARAM_LENGTH]
    return out


class MLflowLogger(MLFlowLogger):
    """:class:`~pytorch_lightning.loggers.MLFlowLogger` with the fit-run record above; same arguments."""

    @property
    def tracking_uri(self) -> str:
        return self.experiment.tracking_uri

    @rank_zero_only
    def log_hyperparams(self, params: Any) -> None:
        if hasattr(params, "as_dict"):
            params = params.as_dict()
        flat = flat_params(dict(params))
        have = self.experiment.get_run(self.run_id).data.params
        new = [Param(k, v) for k, v in flat.items() if k not in have]
        for i in range(0, len(new), 100):
            self.experiment.log_batch(run_id=self.run_id, params=new[i : i + 100])

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if "epoch" in metrics:
            step = int(metrics["epoch"])
        super().log_metrics(metrics, step)

    @rank_zero_only
    def finalize(self, status: str = "success") -> None:
        # Lightning finalizes "failed" while handling the exception that stopped the fit: an interruption's?
        if status == "failed" and interrupt_exit(sys.exc_info()[1]) is not None:
            status = "KILLED"
        super().finalize(status)
