"""What ``mlattack`` prints besides its results: help text that offers mlattack's own classes, and library
output kept quiet (no hardware banner, advertising, first-run chatter or deprecation notices of libraries'
internals), each dropped at the logger or warning that emits it rather than by silencing whole libraries.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
import os
import pkgutil
import sys
import warnings

from jsonargparse import DefaultHelpFormatter

#: the one-line help of Lightning's subcommands (the Trainer's docstrings are cut mid-sentence)
LIGHTNING_HELP = {
    "fit": "train a model and register it in MLflow",
    "validate": "evaluate a model on the validation split",
    "test": "evaluate a model on the test split",
    "predict": "label probabilities of the test split",
}
#: their longer description, shown by ``mlattack <subcommand> --help``
LIGHTNING_DESCRIPTION = {
    "fit": "Train a model: one MLflow run, checkpoints (best by val mAP, and last for --ckpt_path resume), and the "
    "best network registered as models:/<net>-<data>@best.",
    "validate": "Evaluate a model on the validation split (--ckpt_path: a .ckpt file or a models:/ URI).",
    "test": "Evaluate a model on the test split (--ckpt_path: a .ckpt file or a models:/ URI).",
    "predict": "Label probabilities of the test split (--ckpt_path: a .ckpt file or a models:/ URI).",
}
#: ``--ckpt_path`` as mlattack reads it (Lightning's text is about its own model registry and earlier fit calls)
CKPT_HELP = {
    "fit": "resume training from a .ckpt written by `mlattack fit` (e.g. outputs/<run>/checkpoints/last.ckpt); "
    "the fit continues in the MLflow run that wrote it",
}
CKPT_HELP_EVAL = (
    "the model to use: a .ckpt written by `mlattack fit` (its network settings are read from it), or a registered "
    "network: models:/<name>@<alias> (e.g. models:/mlgcn-synthetic@best), models:/<name>/<version>, runs:/<id>/model"
)


def _is_network(cls: type) -> bool:
    """A class offered for ``--model.net``: one of mlattack's, taking the label count (MLGCN, MLLIW, ...)."""
    return (
        cls.__module__.startswith("mlattack.models.") and "num_classes" in inspect.signature(cls).parameters
    )


def _is_loss(cls: type) -> bool:
    return cls.__module__ == "mlattack.models.losses"


class HelpFormatter(DefaultHelpFormatter):
    """jsonargparse's help, with "known subclasses" lists cut to mlattack's own classes when they run long (an
    ``nn.Module`` argument would otherwise list every module torch has imported)."""

    KNOWN = ", known subclasses: "
    LONGEST = 12
    #: which of mlattack's classes an option offers, by option name (others: every mlattack class listed)
    OFFER = {"model.net": _is_network, "model.loss": _is_loss}

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        """Wrap prose as argparse does, but keep indented lines (examples in an epilog) as written."""
        return "\n".join(
            indent + line
            if line.startswith(" ") or not line
            else super(HelpFormatter, self)._fill_text(line, width, indent)
            for line in text.splitlines()
        )

    def _get_help_string(self, action) -> str:
        if (
            "torch" in sys.modules
        ):  # class-typed options exist only then (`mlattack --help` has none: stays quick)
            import_own_classes()
        text = super()._get_help_string(action)
        head, sep, tail = text.partition(self.KNOWN)
        paths = tail[:-1].split(", ") if sep else []
        if len(paths) <= self.LONGEST:
            return text
        offer = self.OFFER.get(action.dest, lambda cls: True)
        own = [p for p in paths if p.startswith("mlattack.") and offer(_import_class(p))] or paths[
            : self.LONGEST
        ]
        return f"{head}{sep}{', '.join(own)}; or any class_path ({len(paths) - len(own)} others not listed))"


def _import_class(path: str) -> type:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


@functools.cache
def import_own_classes() -> None:
    """Import mlattack's networks, losses and attacks so the help offers them (a module whose optional
    dependency is missing is skipped: help must not fail)."""
    for package in ("mlattack.models", "mlattack.attacks"):
        pkg = importlib.import_module(package)
        for info in pkgutil.iter_modules(pkg.__path__, package + "."):
            try:
                importlib.import_module(info.name)
            except Exception:  # noqa: BLE001 - listing classes is best effort
                continue


class _DropMessages(logging.Filter):
    """Drop a logger's records that start with one of ``prefixes`` (the rest of that logger still shows)."""

    def __init__(self, *prefixes: str) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


def quiet_output() -> None:
    """Keep the output to what the user asked for: no hardware banner, advertising, first-run chatter or
    deprecation notices of libraries' internals, each dropped at the logger or warning that emits it."""
    _quiet_loggers()
    warnings.filterwarnings(  # torch deprecates a class Lightning's own pytree helper still uses
        "ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning
    )
    # `mlattack demo` passes explicit args while sys.argv holds "demo": that is intended, not a mistake
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")


@functools.cache
def _quiet_loggers() -> None:
    # no call home from a research tool; MLflow starts its telemetry client on import, so drop that client too
    if "MLFLOW_DISABLE_TELEMETRY" not in os.environ:
        os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
        from mlflow.telemetry import set_telemetry_client

        set_telemetry_client()  # drops the client started at import
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar per registry download
    logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(
        _DropMessages("GPU available", "TPU available", "HPU available", "💡 Tip")
    )
    logging.getLogger("pytorch_lightning.accelerators.cuda").addFilter(_DropMessages("LOCAL_RANK"))
    logging.getLogger("pytorch_lightning.loggers.mlflow").addFilter(_DropMessages("Experiment with name"))
    logging.getLogger("lightning_fabric.utilities.seed").setLevel(logging.WARNING)  # "Seed set to ..."
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # database set-up and run-link chatter
