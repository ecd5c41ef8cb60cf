"""Discoverability: `mlattack --help` names every command, `--help` anywhere runs nothing, every option says what
it is for, and shipped configs are found from any directory."""

import argparse
import re

import pytest
import yaml

from mlattack import __version__, cli
from mlattack.cli.tools import TOOLS
from mlattack.data.datamodule import SOURCES

SUBCOMMANDS = ["fit", "validate", "test", "predict", "attack", "evaluate", "report", "data", "demo", "study"]


def test_top_level_help_lists_every_subcommand_on_one_line(mlattack):
    code, out, _ = mlattack("--help")
    assert code == 0
    listed = re.findall(r"^    (\w+) {2,}(\S.*)$", out, re.M)
    assert [name for name, _ in listed] == SUBCOMMANDS
    for name, _ in listed:  # one line each: the next line starts another subcommand or ends the list
        following = out.split(f"\n    {name} ", 1)[1].split("\n", 2)[1]
        assert not following.startswith(" " * 10), f"{name}'s help wraps: {following!r}"


@pytest.mark.parametrize("argv", [[s, "--help"] for s in SUBCOMMANDS] + [["data", "stats", "--help"]])
def test_help_prints_and_runs_nothing(mlattack, monkeypatch, tmp_path, argv):
    monkeypatch.chdir(tmp_path)
    code, out, err = mlattack(*argv)
    assert code == 0 and out.startswith("usage: mlattack") and not err
    assert list(tmp_path.iterdir()) == []  # no store, no outputs: nothing ran


def test_version(mlattack):
    code, out, _ = mlattack("--version")
    assert code == 0 and out.strip() == f"mlattack {__version__}"


@pytest.fixture(scope="module")
def parser():
    """The one parser, as built for a run (parsing stopped before it starts)."""

    class Built(Exception):
        pass

    def grab(self, parser, args):
        raise Built(parser)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cli.MLAttackCLI, "parse_arguments", grab)
        with pytest.raises(Built) as built:
            cli.lightning_main([])
    return built.value.args[0]


def walk(parser, prog="mlattack"):
    yield prog, parser
    if parser._subcommands_action is not None:
        for name, sub in parser._subcommands_action._name_parser_map.items():
            yield from walk(sub, f"{prog} {name}")


def test_every_option_of_every_command_has_help_text(parser):
    progs = [prog for prog, _ in walk(parser)]
    assert progs == [
        "mlattack",
        *[f"mlattack {s}" for s in SUBCOMMANDS[:8]],
        "mlattack data stats",
        "mlattack demo",
        "mlattack study",
    ]
    for prog, sub in walk(parser):
        undocumented = [
            a.option_strings[-1]
            for a in sub._actions
            if a.option_strings and not isinstance(a, argparse._HelpAction) and not (a.help or "").strip()
        ]
        assert not undocumented, f"{prog}: {undocumented}"


def test_fit_help_offers_mlattack_networks_and_is_of_sane_length(parser):
    fit = parser._subcommands_action._name_parser_map["fit"].format_help()
    assert len(fit.splitlines()) < 700
    net = fit.split("--model.net NET", 1)[1].split("--model.loss.help", 1)[0]
    assert "mlattack.models.mlgcn.MLGCN" in net and "mlattack.models.mlliw.MLLIW" in net
    assert (
        "torch.ao" not in fit and "GraphConvolution" not in net
    )  # building blocks are not offered as networks
    assert "--optimizer" not in fit.replace("--model.optimizer", "")  # the model owns its optimiser: one lr


def test_data_help_names_every_source(parser):
    stats = parser._subcommands_action._name_parser_map["data"]._subcommands_action._name_parser_map["stats"]
    text = stats.format_help()
    assert all(name in text for name in SOURCES)


def test_tools_are_in_the_one_parser(parser):
    assert set(TOOLS) <= set(parser._subcommands_action._name_parser_map)


def test_shipped_configs_are_found_from_any_directory(mlattack, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    code, out, err = mlattack(
        "data", "stats", "--data", "configs/data/synthetic.yaml",
        "--data.options", '{"num_samples": 12, "num_classes": 4}', "--split", "test",
    )  # fmt: skip
    assert code == 0, err
    assert "synthetic / test" in out and "images: 12" in out


def test_a_shipped_data_file_replaces_the_options_of_an_earlier_config(mlattack):
    code, out, err = mlattack(
        "fit", "--config", "configs/demo.yaml", "--data", "configs/data/voc2007.yaml", "--print_config"
    )
    assert code == 0, err
    data = yaml.safe_load(out)["data"]
    assert data["source"] == "voc2007" and data["options"] == {}  # the demo's synthetic options are gone
