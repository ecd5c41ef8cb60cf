"""The subcommands beside Lightning's fit/validate/test/predict: ``attack``, ``data stats``, ``demo``, ``report``,
``evaluate`` and ``study``, one :class:`~mlattack.cli.parsing.Tool` each (a new subcommand is one entry here).

Each is a parser builder (added to the one ``mlattack`` parser by :mod:`mlattack.cli.lightning`, so ``--help`` works
and runs nothing) and a runner that takes the parsed namespace and ``run``, the ``mlattack`` command itself (handed
in by :mod:`mlattack.cli`: ``demo`` and ``study`` run other commands through it), so nothing here imports back up.
The modules named here import their libraries when a parser is built or a command runs: ``mlattack --help`` lists
the tools without them.
"""

from __future__ import annotations

from mlattack.cli.attack import attack_parser, run_attack
from mlattack.cli.data import add_data_subcommands, data_parser, run_data
from mlattack.cli.demo import demo_parser, run_demo, run_study, study_parser
from mlattack.cli.parsing import Tool
from mlattack.cli.report import evaluate_parser, report_parser, run_evaluate, run_report

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
