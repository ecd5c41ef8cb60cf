"""Help a newcomer can act on: `mlattack --help` ends with examples of real commands, and `--ckpt_path` says what
mlattack takes there (a fit checkpoint or a registered network), not Lightning's own registry syntax."""

import re

import pytest

from mlattack.cli import EXAMPLES
from mlattack.cli.tools import TOOLS
from mlattack.console import LIGHTNING_HELP


def test_top_level_help_ends_with_examples_of_real_commands(mlattack):
    code, out, _ = mlattack("--help")
    examples = [line for line in EXAMPLES.splitlines() if line.startswith("  ")]
    assert code == 0 and all(f"\n{line}\n" in out for line in examples)  # kept as written, not re-wrapped
    commands = re.findall(r"^  mlattack (\S+)", out[out.index("Examples") :], re.M)
    assert commands and set(commands) - {"<command>"} <= {*LIGHTNING_HELP, *TOOLS}
    assert "goes after the command" in out


@pytest.mark.parametrize("command", ["validate", "test", "predict"])
def test_ckpt_path_help_offers_registered_networks(mlattack, command):
    _, out, _ = mlattack(command, "--help")
    ckpt = " ".join(out.split("\n  --ckpt_path CKPT_PATH\n", 1)[1].split("\n  --", 1)[0].split())
    assert "models:/<name>@<alias>" in ckpt and "`mlattack fit`" in ckpt
    assert "registry:model-name" not in ckpt and "trainer.fit" not in ckpt


def test_fit_ckpt_path_help_says_resume(mlattack):
    _, out, _ = mlattack("fit", "--help")
    ckpt = " ".join(out.split("\n  --ckpt_path CKPT_PATH\n", 1)[1].split("\n  --", 1)[0].split())
    assert ckpt.startswith("resume training from a .ckpt") and "MLflow run" in ckpt
