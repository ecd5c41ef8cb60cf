"""The ``mlattack`` command: one parser that knows every subcommand, so ``mlattack --help`` lists them all and
``--help`` on any of them prints its options and runs nothing.

- ``mlattack fit|validate|test|predict``: LightningCLI over :class:`MultiLabelClassifier` and
  :class:`MultiLabelDataModule`, logging to MLflow (default store: SQLite in ``./mlruns``); the CLI class and its
  defaults are in :mod:`mlattack.lightning_cli`.
- ``mlattack attack | evaluate | report | data stats | demo | ...``: :data:`mlattack.commands.TOOLS` (a new
  subcommand is one entry there: its help line, parser builder and runner).

Expected mistakes (config, data, model URI or checkpoint, tracking server, bad values) end as one line and exit
code 2 (:mod:`mlattack.errors`); ``--debug`` or ``MLATTACK_DEBUG=1`` shows the traceback.
"""

from __future__ import annotations

import sys
from typing import Any

from mlattack.commands import TOOLS
from mlattack.console import LIGHTNING_HELP, HelpFormatter, quiet_output
from mlattack.data.datamodule import MultiLabelDataModule
from mlattack.errors import (
    EXIT_STATUS,
    USER_ERROR_EXIT,
    check_yaml_syntax,
    debug_requested,
    interrupt_exit,
    is_user_error,
    report_error,
    resume_hint,
    stop_on_sigterm,
)
from mlattack.lightning_cli import MLAttackCLI
from mlattack.models.module import MultiLabelClassifier
from mlattack.resources import resolve_config_args
from mlattack.tracking.callbacks import MLflowSaveConfig
from mlattack.tracking.store import EXPERIMENT, default_artifact_location, default_tracking_uri

__all__ = ["MLAttackCLI", "lightning_main", "main", "run"]

#: what `mlattack --help` ends with: where to start, and where options go
EXAMPLES = (
    """\
Examples (every option, --config included, goes after the command):
  mlattack demo                                   train on built-in data, then run all nine attacks
  mlattack data stats --data configs/data/voc2007.yaml --data.root /datasets/VOCdevkit
  mlattack fit --config configs/demo.yaml         train the demo model, register models:/mlgcn-synthetic@best
  mlattack attack --config configs/attack-demo.yaml --model models:/mlgcn-synthetic@best
  mlattack report --output_dir reports/demo       tables and figures of the finished attack runs
  mlattack <command> --help                       the options of one command
configs/... paths work from any directory (the configs shipped with mlattack); --debug shows a traceback.
"""
    + EXIT_STATUS
)

#: options that moved, by the key an error names -> where they went
MOVED = {"model.lr": "the learning rate is set in one place: model.optimizer.init_args.lr"}


def lightning_main(args: list[str] | None = None, run: bool = True) -> MLAttackCLI:
    """Parse ``args`` with the one ``mlattack`` parser and run the subcommand; errors propagate."""
    quiet_output()
    tracking_uri = default_tracking_uri()
    return MLAttackCLI(
        MultiLabelClassifier,
        MultiLabelDataModule,
        save_config_callback=MLflowSaveConfig,
        save_config_kwargs={"save_to_log_dir": False},
        trainer_defaults={
            "logger": {
                "class_path": "mlattack.tracking.logger.MLflowLogger",
                "init_args": {
                    "experiment_name": EXPERIMENT,
                    "tracking_uri": tracking_uri,
                    "artifact_location": default_artifact_location(tracking_uri),
                },
            },
            "default_root_dir": "outputs",
        },
        seed_everything_default=123,
        parser_kwargs={
            "prog": "mlattack",
            "description": "Adversarial attacks that make multi-label image classifiers show many labels.",
            "epilog": EXAMPLES,
            "formatter_class": HelpFormatter,
            "exit_on_error": False,  # main() reports parse errors in the same one-line form as the rest
            "allow_abbrev": False,  # a typo must not silently pick another option
        },
        auto_configure_optimizers=False,  # the model owns its optimiser (model.optimizer): one learning rate
        args=args,
        run=run,
    )


def run(argv: list[str] | None = None) -> Any:
    """Run one ``mlattack`` command and return what it made (the LightningCLI for fit/validate/test/predict, the
    tool's result otherwise); errors propagate. ``configs/...`` paths fall back to the shipped configs."""
    args = resolve_config_args([a for a in (sys.argv[1:] if argv is None else argv) if a != "--debug"])
    check_yaml_syntax(args)
    cli = lightning_main(args)
    return cli.result if cli.subcommand in TOOLS else cli


def main(argv: list[str] | None = None) -> None:
    """The ``mlattack`` entry point: expected errors end as one line and exit code 2."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or debug_requested()
    stop_on_sigterm()
    try:
        run(args)
    except BaseException as e:
        code = interrupt_exit(e)
        if code is not None:
            if debug:
                raise
            print(f"mlattack: interrupted; {resume_hint(args)}", file=sys.stderr)
            raise SystemExit(code) from None
        if isinstance(e, SystemExit):
            raise
        if debug or not is_user_error(e):
            raise
        print(report_error(e, resolve_config_args(args), [*LIGHTNING_HELP, *TOOLS], MOVED), file=sys.stderr)
        raise SystemExit(USER_ERROR_EXIT) from None


if __name__ == "__main__":
    main()
