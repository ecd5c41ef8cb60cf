"""The subcommands beside Lightning's fit/validate/test/predict: ``attack``, ``data stats``, ``demo``, ``report``,
``evaluate`` and ``study``.

Each is a parser builder (added to the one ``mlattack`` parser by :mod:`mlattack.cli.lightning`, so ``--help`` works
and runs nothing) and a runner that takes the parsed namespace and ``run``, the ``mlattack`` command itself (handed
in by :mod:`mlattack.cli`: ``demo`` and ``study`` run other commands through it), so nothing here imports back up.
"""

from __future__ import annotations

import inspect
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jsonargparse import ActionConfigFile, ArgumentParser, Namespace

from mlattack.resources import config_dir

#: help of run_attacks' arguments whose docstring says nothing (a docstring ``Args:`` entry takes precedence)
ATTACK_HELP = {
    "model": "the network to attack: models:/<name>@<alias>, models:/<name>/<version>, runs:/<run id>/model, or a "
    ".ckpt written by `mlattack fit`",
    "num_samples": "N: correctly predicted samples of the test split to attack (default: the study driver's, 1000 "
    "or 50 for ML-LIW on VOC2007; the paper's MLA-LP runs: 200)",
    "precision": "Lightning precision of the attack pass",
    "accelerator": "Lightning accelerator: auto, cpu, gpu, ...",
    "devices": "number of devices, or 'auto'; more than one splits whole batches across DDP ranks",
    "strategy": "Lightning strategy (auto, ddp, ...)",
    "num_nodes": "machines taking part in a DDP run",
    "seed": "random seed of the attack pass (random starts, sample order of ties)",
    "tracking_uri": "MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else the SQLite store in ./mlruns)",
    "experiment": "MLflow experiment that receives the attack runs",
    "run_id": "resume this parent run (default: the unfinished run with the same settings, if any)",
    "output_dir": "folder for the cached sample selection and the per-batch records a resume reads back",
    "panel_samples": "samples shown in each attack's image panel in MLflow",
}


def docstring_help(fn: Callable) -> dict[str, str]:
    """Argument descriptions from ``fn``'s docstring, whatever its section header says ("Arguments (besides the
    obvious ones):" included); an entry naming several arguments ("a, b: ...") describes each."""
    import docstring_parser

    doc = re.sub(r"(?m)^(\s*)Arguments\b[^\n]*:\s*$", r"\1Args:", inspect.getdoc(fn) or "")
    out = {}
    for param in docstring_parser.parse(doc, docstring_parser.DocstringStyle.GOOGLE).params:
        for name in param.arg_name.split(","):
            out[name.strip()] = " ".join((param.description or "").split())
    return out


def fill_missing_help(parser: ArgumentParser, helps: dict[str, str]) -> None:
    """Give the options named in ``helps`` (by dest) that have no help text from a docstring their help."""
    for action in parser._actions:
        text = helps.get(action.dest)
        if text and not action.help:
            action.help = text


#: the ``mlattack`` command as a function: a command line in, what the command made out (:func:`mlattack.cli.run`)
RunCommand = Callable[[list[str]], Any]


@dataclass
class Tool:
    """A subcommand that is not a Trainer method: one help line, its parser, what runs it, and the subcommands
    of its own (added once its parser is in place, as jsonargparse wants)."""

    help: str
    build: Callable[[], ArgumentParser]
    run: Callable[[ArgumentParser, Namespace, RunCommand], Any]
    subcommands: Callable[[ArgumentParser], dict[str, ArgumentParser]] | None = None


def config_argument(parser: ArgumentParser) -> None:
    parser.add_argument(
        "-c",
        "--config",
        action=ActionConfigFile,
        help="a YAML file of these options (configs/... paths work "
        "from any directory: they fall back to the configs shipped with mlattack)",
    )


# -- mlattack attack ------------------------------------------------------------------------------------------------
def attack_parser() -> ArgumentParser:
    from mlattack.data.datamodule import MultiLabelDataModule
    from mlattack.evaluation.runner import AttackSpec, run_attacks

    parser = ArgumentParser(
        description="Run show-many-labels attacks on a trained model: select correctly "
        "predicted test samples, attack them, log one MLflow run per attack, print the table."
    )
    config_argument(parser)
    parser.add_class_arguments(MultiLabelDataModule, "data", help="the data source the model was trained on")
    parser.add_argument(
        "--attacks",
        type=list[AttackSpec],
        required=True,
        help="the attacks: a list of {config: configs/attack/<name>.yaml, overrides: {...}} or "
        "{attack: {class_path, init_args}} entries (see configs/attack-demo.yaml)",
    )
    parser.add_function_arguments(  # sub_configs: `--defence configs/defence/jpeg.yaml` reads the file
        run_attacks, skip={"data", "attacks", "progress_bar", "callbacks"}, sub_configs=True
    )
    fill_missing_help(parser, {**ATTACK_HELP, **docstring_help(run_attacks)})
    for group in parser._action_groups:  # the function's group is titled by its docstring's first line
        if any(a.dest == "model" for a in group._group_actions):
            group.title = "the attack run"
    return parser


def run_attack(parser: ArgumentParser, cfg: Namespace, run: RunCommand):
    from mlattack.evaluation.runner import run_attacks

    init = parser.instantiate(cfg)
    kwargs = {k: v for k, v in init.as_dict().items() if k not in ("config", "__path__")}
    kwargs["data"] = init.data
    report = run_attacks(**kwargs)
    if report.table:  # DDP ranks > 0 return an empty table: rank 0 prints
        print_report(report)
    return report


def print_report(report) -> None:
    """The success table (attacks x scenarios, the study's layout: :func:`mlattack.report.tables.success_frame`),
    every rate with its 95 % Wilson interval, and where to find the runs."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from mlattack.report.tables import success_frame, table_rows

    frame = success_frame(report.metrics, extra=("labels shown", "L2 (all)"))
    table = Table(
        title=f"Success rate (%) [95 % Wilson interval] - showing many labels ({report.mode}, "
        f"N={report.num_selected}, avgLabels={report.avg_labels:.2f})"
    )
    head, body = table_rows(frame)
    table.add_column("attack", no_wrap=True)
    for column in head[1:]:
        table.add_column(column, justify="right")
    for name, cells in body:  # the interval under its rate keeps the table as narrow as the rates alone
        cells = [c.replace(" % [", "\n[") for c in cells]
        table.add_row(escape(name), *cells)  # grid points are named "BIM[eps=0.1,...]": not rich markup
    Console(width=max(Console().width, 130)).print(table)
    print(f"MLflow parent run: {report.parent_run_id} ({len(report.child_run_ids)} attack runs)")


# -- mlattack data stats --------------------------------------------------------------------------------------------
def data_parser() -> ArgumentParser:
    """``mlattack data`` only holds subcommands; they are added by :func:`add_data_subcommands`."""
    return ArgumentParser(description="Inspect a data source.")


def stats_parser() -> ArgumentParser:
    from mlattack.data.datamodule import MultiLabelDataModule

    parser = ArgumentParser(description="Label statistics of a data source, one table per split.")
    config_argument(parser)
    parser.add_class_arguments(
        MultiLabelDataModule,
        "data",
        help="the data source (e.g. --data configs/data/voc2007.yaml --data.root /datasets/VOCdevkit)",
    )
    parser.add_argument(
        "--split",
        type=str,
        default="all",
        choices=["train", "val", "test", "all"],
        help="the split to describe, or all three",
    )
    return parser


def add_data_subcommands(parser: ArgumentParser) -> dict[str, ArgumentParser]:
    subcommands = parser.add_subcommands(dest="data_command")
    stats = stats_parser()
    subcommands.add_subcommand("stats", stats, help="label statistics of a data source")
    return {"stats": stats}


def run_data(parser: ArgumentParser, cfg: Namespace, run: RunCommand) -> None:
    stats = parser._subcommands_action._name_parser_map["stats"]
    run_stats(stats, cfg.stats)


def run_stats(parser: ArgumentParser, cfg: Namespace) -> None:
    dm = parser.instantiate(cfg).data
    for split in ("train", "val", "test") if cfg.split == "all" else (cfg.split,):
        table = dm.label_stats(split).table()  # before the heading: a data error leaves no half output
        print(f"\n## {dm.source} / {split}\n")
        print(table)


# -- mlattack demo --------------------------------------------------------------------------------------------------
def demo_parser() -> ArgumentParser:
    parser = ArgumentParser(
        description="The end-to-end demo on the built-in dataset: train ML-GCN and register "
        "it (configs/demo.yaml), then attack it with all nine attacks (configs/attack-demo.yaml)."
    )
    parser.add_argument(
        "--max_epochs",
        type=int | None,
        default=None,
        help="epochs of the training stage (default: configs/demo.yaml's)",
    )
    parser.add_argument(
        "--num_samples",
        type=int | None,
        default=None,
        help="samples attacked (default: configs/attack-demo.yaml's)",
    )
    parser.add_argument(
        "--accelerator", type=str, default="auto", help="Lightning accelerator of both stages"
    )
    return parser


def run_demo(parser: ArgumentParser, cfg: Namespace, run: RunCommand) -> None:
    """Train + register the demo model on the built-in dataset, then attack it with all nine attacks."""
    from mlattack.tracking.callbacks import mlflow_logger
    from mlattack.tracking.registry import RegisterBestModel
    from mlattack.tracking.store import default_tracking_uri, mlflow_ui_command

    configs, start = config_dir(), time.time()
    print("== mlattack demo: built-in dataset ==")
    run(["data", "stats", "--data", str(configs / "data" / "synthetic.yaml"), "--split", "train"])
    fit = ["fit", "--config", str(configs / "demo.yaml"), "--trainer.accelerator", cfg.accelerator]
    fit += ["--trainer.max_epochs", str(cfg.max_epochs)] if cfg.max_epochs is not None else []
    cli = run(fit)
    reg = next((c for c in cli.trainer.callbacks if isinstance(c, RegisterBestModel)), None)
    if reg is None or reg.model_uri is None:
        raise RuntimeError("the demo model was not registered; see the log above")
    fit_seconds = time.time() - start
    print(f"\nTrained and registered {reg.model_uri} in {fit_seconds:.0f} s; attacking it with nine attacks.")
    attack = [
        "attack",
        "--config",
        str(configs / "attack-demo.yaml"),
        "--model",
        reg.model_uri,
        "--accelerator",
        cfg.accelerator,
    ]
    attack += ["--num_samples", str(cfg.num_samples)] if cfg.num_samples is not None else []
    report = run(attack)
    print(f"\nDemo finished in {time.time() - start:.0f} s (fit {fit_seconds:.0f} s).")
    print(f"Fit run: {mlflow_logger(cli.trainer).run_id}   Attack run: {report.parent_run_id}")
    print(f"Model: {reg.model_uri}  (alias: models:/{reg.model_uri.split('/')[1]}@best)")
    uri = default_tracking_uri()
    if uri.startswith(("http://", "https://")):
        print(f"See the runs:  {uri}")
    else:
        print(f"See the runs:  {mlflow_ui_command(uri)}  -> http://127.0.0.1:5000")


# -- mlattack report ------------------------------------------------------------------------------------------------
def report_parser() -> ArgumentParser:
    from mlattack.report.command import report_parser as build

    return build()


def run_report(parser: ArgumentParser, cfg: Namespace, run: RunCommand):
    """The report command parses its own arguments: hand it the parsed values back, as one config text."""
    import yaml

    from mlattack.report.command import main as report_main

    values = {k: v for k, v in cfg.as_dict().items() if k not in ("config", "__path__")}
    return report_main(["--config", yaml.safe_dump(values)])  # a config given as text: every type survives


# -- mlattack evaluate -----------------------------------------------------------------------------------------------
def evaluate_parser() -> ArgumentParser:
    from mlattack.evaluation.transfer import evaluate_parser as build

    return build()


def run_evaluate(parser: ArgumentParser, cfg: Namespace, run: RunCommand):
    from mlattack.evaluation.transfer import run_evaluate as evaluate

    return evaluate(parser, cfg)


# -- mlattack study -------------------------------------------------------------------------------------------------
def study_parser() -> ArgumentParser:
    from mlattack.study import study_parser as build

    return build()


def run_study(parser: ArgumentParser, cfg: Namespace, run: RunCommand):
    from mlattack.study import run_study as study

    return study(cfg, run)


TOOLS: dict[str, Tool] = {
    "attack": Tool("attack a trained model and print the success table", attack_parser, run_attack),
    "evaluate": Tool("re-judge stored adversarial examples on another model", evaluate_parser, run_evaluate),
    "report": Tool("tables and figures from finished attack runs", report_parser, run_report),
    "data": Tool(
        "inspect a data source (`mlattack data stats`)", data_parser, run_data, add_data_subcommands
    ),
    "demo": Tool("train on built-in data, then run all nine attacks", demo_parser, run_demo),
    "study": Tool("fit and attack several models, then report", study_parser, run_study),
}
