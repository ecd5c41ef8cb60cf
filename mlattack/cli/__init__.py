"""The ``mlattack`` command: one parser that knows every subcommand, so ``mlattack --help`` lists them all and
``--help`` on any of them prints its options and runs nothing.

- ``mlattack fit|validate|test|predict``: LightningCLI over :class:`MultiLabelClassifier` and
  :class:`MultiLabelDataModule`, logging to MLflow (default store: SQLite in ``./mlruns``); the CLI class and its
  defaults are in :mod:`mlattack.cli.lightning`.
- ``mlattack attack | evaluate | report | data stats | demo | ...``: :data:`mlattack.cli.tools.TOOLS` (a new
  subcommand is one entry there: its help line, parser builder and runner); :func:`run` hands itself to them.

Expected mistakes (config, data, model URI or checkpoint, tracking server, bad values) end as one line and exit
code 2 (:mod:`mlattack.errors`); ``--debug`` or ``MLATTACK_DEBUG=1`` shows the traceback.
"""

from __future__ import annotations

import sys
from argparse import ArgumentError
from typing import TYPE_CHECKING, Any

import mlattack
from mlattack.cli.reporting import check_yaml_syntax, report_error
from mlattack.cli.tools import TOOLS
from mlattack.console import LIGHTNING_HELP, HelpFormatter
from mlattack.errors import (
    EXIT_STATUS,
    USER_ERROR_EXIT,
    debug_requested,
    interrupt_exit,
    is_user_error,
    resume_hint,
    stop_on_sigterm,
)
from mlattack.quick import cached_help, is_top_level_help, subcommand_help_request, top_parser
from mlattack.resources import resolve_config_args

if TYPE_CHECKING:
    from mlattack.cli.lightning import MLAttackCLI

__all__ = ["MLAttackCLI", "lightning_main", "main", "run"]

#: the top-level description, shared by the full parser and the quick one that prints ``mlattack --help``
DESCRIPTION = "Adversarial attacks that make multi-label image classifiers show many labels."

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


def __getattr__(name: str) -> Any:
    """``mlattack.cli.MLAttackCLI``, imported when asked for (it brings Lightning and torch)."""
    if name == "MLAttackCLI":
        from mlattack.cli.lightning import MLAttackCLI

        return MLAttackCLI
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def lightning_main(args: list[str] | None = None, run: bool = True) -> Any:
    """Parse ``args`` with the one ``mlattack`` parser and run the subcommand; errors propagate. The default
    store is only named here: it is created by the command that logs to it."""
    from mlattack.cli.lightning import MLAttackCLI
    from mlattack.console import quiet_output
    from mlattack.data.datamodule import MultiLabelDataModule
    from mlattack.models.module import MultiLabelClassifier
    from mlattack.tracking.callbacks import MLflowSaveConfig
    from mlattack.tracking.store import EXPERIMENT, default_artifact_location, default_tracking_uri

    quiet_output()
    tracking_uri = default_tracking_uri(create=False)
    return MLAttackCLI(
        MultiLabelClassifier,
        MultiLabelDataModule,
        tools=TOOLS,
        rerun=run_command,  # the tools' way back to the mlattack command (``run`` is the flag here)
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
            "description": DESCRIPTION,
            "epilog": EXAMPLES,
            "formatter_class": HelpFormatter,
            "exit_on_error": False,  # main() reports parse errors in the same one-line form as the rest
            "allow_abbrev": False,  # a typo must not silently pick another option
        },
        auto_configure_optimizers=False,  # the model owns its optimiser (model.optimizer): one learning rate
        args=args,
        run=run,
    )


def quick_answer(args: list[str]) -> None:
    """``--version`` and ``--help`` without building the full parser (:mod:`mlattack.quick`); returns when the
    command line asks for more than that."""
    if args == ["--version"]:
        print(f"mlattack {mlattack.__version__}")
        raise SystemExit(0)
    if is_top_level_help(args):
        helps = {**LIGHTNING_HELP, **{name: tool.help for name, tool in TOOLS.items()}}
        top_parser(helps, DESCRIPTION, EXAMPLES, HelpFormatter).print_help()
        raise SystemExit(0)
    if subcommand_help_request(args):
        cached_help(args, lambda: lightning_main(args))
    misplaced = misplaced_command(args, [*LIGHTNING_HELP, *TOOLS])
    if misplaced is not None:
        raise ArgumentError(None, misplaced)


def warm_help_cache() -> None:
    """Keep every subcommand's ``--help`` text in the cache (:mod:`mlattack.quick`), all in one process: the
    install step runs it (Makefile), so even the first ``mlattack <command> --help`` answers at once (building one
    help costs the model-library imports, several seconds; all of them, about ten)."""
    import contextlib
    import io

    for words in [[name] for name in [*LIGHTNING_HELP, *TOOLS]] + [["data", "stats"]]:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
            quick_answer([*words, "--help"])


def misplaced_command(args: list[str], subcommands: list[str]) -> str | None:
    """The parser's error for a mistyped subcommand (``mlattack atack``) or options before it (``mlattack --config
    x.yaml fit``), found without building the full parser: a typo should cost no model-library import."""
    if not args or args[0] in ("-h", "--help", "--version"):
        return None
    if not args[0].startswith("-") and args[0] not in subcommands:
        choices = ", ".join(repr(s) for s in subcommands)
        return f"argument subcommand: invalid choice: {args[0]!r} (choose from {choices})"
    first = next((a for a in args if a in subcommands), None)
    if args[0].startswith("-") and first is not None:
        return f"Option {args[0]!r} is not accepted before subcommand '{first}'"
    return None


def with_fit_settings(args: list[str]) -> list[str]:
    """``validate|test|predict --ckpt_path models:/...`` with neither ``--config`` nor ``--model``: the registered
    network's fit settings (its class and arguments, its data) go first, so whatever the user typed still wins."""
    if not args or args[0] not in ("validate", "test", "predict"):
        return args
    given = [a.partition("=")[2] for a in args if a.startswith("--ckpt_path=")]
    given += [b for a, b in zip(args, args[1:], strict=False) if a == "--ckpt_path"]
    ckpt = given[-1] if given else ""
    own = any(a in ("-c", "--config") or a.startswith(("--config=", "--model")) for a in args[1:])
    if own or not ckpt.startswith(("models:/", "runs:/")):
        return args
    import yaml

    from mlattack.console import quiet_output
    from mlattack.tracking.fit_settings import fit_settings
    from mlattack.tracking.store import default_tracking_uri

    quiet_output()  # no download bar for one small file
    settings = fit_settings(ckpt, default_tracking_uri(create=False))
    return [args[0], "--config", yaml.safe_dump(settings), *args[1:]] if settings else args


def run(argv: list[str] | None = None) -> Any:
    """Run one ``mlattack`` command and return what it made (the LightningCLI for fit/validate/test/predict, the
    tool's result otherwise); errors propagate. ``configs/...`` paths fall back to the shipped configs."""
    args = resolve_config_args([a for a in (sys.argv[1:] if argv is None else argv) if a != "--debug"])
    quick_answer(args)
    args = with_fit_settings(args)
    check_yaml_syntax(args)
    cli = lightning_main(args)
    return cli.result if cli.subcommand in TOOLS else cli


def run_command(argv: list[str]) -> Any:
    """:func:`run` under a name that :func:`lightning_main`'s ``run`` flag does not hide."""
    return run(argv)


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
        print(
            report_error(e, resolve_config_args(args), [*LIGHTNING_HELP, *TOOLS], MOVED, typed=args),
            file=sys.stderr,
        )
        raise SystemExit(USER_ERROR_EXIT) from None
