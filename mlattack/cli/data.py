"""``mlattack data stats``: label statistics of a data source, one table per split."""

from __future__ import annotations

from jsonargparse import ArgumentParser, Namespace

from mlattack.cli.parsing import RunCommand, config_argument


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
