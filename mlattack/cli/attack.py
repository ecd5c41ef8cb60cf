"""``mlattack attack``: its parser (``run_attacks``' arguments, the data source and the attack list) and the success
table it prints."""

from __future__ import annotations

from jsonargparse import ArgumentParser, Namespace

from mlattack.cli.parsing import RunCommand, config_argument, docstring_help, fill_missing_help

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

    frame = success_frame(report.metrics, extra=("labels shown", "L2 (all)"), baseline=True)
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
