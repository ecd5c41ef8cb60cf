"""A newcomer's first commands answer at once: `--version` and `--help` import no model library, a subcommand's
`--help` is printed from the cache the second time, and a command that tracks nothing leaves no store behind."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mlattack import cli

HEAVY = ("torch", "pytorch_lightning", "lightning_fabric", "mlflow", "timm", "torchvision")
ROOT = Path(__file__).resolve().parents[2]

#: runs `mlattack <argv>` in a fresh interpreter, then prints its output and the heavy modules it imported
PROBE = """
import contextlib, io, json, sys
from mlattack.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        main(sys.argv[1:])
    except SystemExit as e:
        code = e.code
print(json.dumps({"code": code, "out": out.getvalue(), "heavy": sorted(m for m in HEAVY if m in sys.modules)}))
""".replace("HEAVY", repr(HEAVY))


def probe(cwd: Path, *argv: str, stderr: bool = False) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *argv], cwd=cwd, env=env, capture_output=True, text=True, check=True
    )
    result = json.loads(done.stdout.splitlines()[-1])
    return {**result, "err": done.stderr} if stderr else result


@pytest.fixture
def fresh_dir(tmp_path, monkeypatch):
    """A working folder with no tracking URI set: the default store would be ./mlruns here."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLATTACK_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("COLUMNS", "100")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["-h"]])
def test_version_and_help_import_no_model_library_and_make_no_store(fresh_dir, argv):
    result = probe(fresh_dir, *argv)
    assert result["code"] == 0 and result["out"].startswith(
        "usage: mlattack" if argv != ["--version"] else "mlattack "
    )
    assert result["heavy"] == []
    assert list(fresh_dir.iterdir()) == []  # no ./mlruns


def test_quick_top_level_help_is_the_full_parsers_help(mlattack, fresh_dir, capsys):
    code, quick, _ = mlattack("--help")
    assert code == 0
    with pytest.raises(SystemExit):
        cli.lightning_main(["--help"])  # the full parser, every subcommand built
    assert capsys.readouterr().out == quick


def test_subcommand_help_is_printed_from_the_cache_the_second_time(mlattack, fresh_dir):
    code, first, _ = mlattack("attack", "--help")  # builds the full parser, keeps the text
    assert code == 0 and "--num_samples" in first
    result = probe(fresh_dir, "attack", "--help")
    assert result == {"code": 0, "out": first, "heavy": []}
    assert [p.name for p in fresh_dir.iterdir()] == []
    elsewhere = fresh_dir.parent / "elsewhere"  # its text shows no folder: the same entry serves every folder
    elsewhere.mkdir()
    assert probe(elsewhere, "attack", "--help") == result


def test_help_that_shows_the_folder_is_kept_for_that_folder(mlattack, fresh_dir):
    """fit's defaults name ./mlruns resolved in the working folder: another folder gets its own text."""
    code, first, _ = mlattack("fit", "--help")
    assert code == 0 and str(fresh_dir) in "".join(first.split())  # help wraps the long path
    assert probe(fresh_dir, "fit", "--help") == {"code": 0, "out": first, "heavy": []}
    elsewhere = fresh_dir.parent / "elsewhere"
    elsewhere.mkdir()
    other = probe(elsewhere, "fit", "--help")
    flat = "".join(other["out"].split())
    assert other["code"] == 0 and str(elsewhere) in flat and str(fresh_dir) not in flat


def test_help_after_a_config_is_not_cached(mlattack, fresh_dir):
    """Defaults read from a --config change the help: that text is built each time, never kept."""
    code, _, _ = mlattack("fit", "--config", "configs/demo.yaml", "--help")
    assert code == 0
    assert not (fresh_dir.parent / "cache").exists()


def test_data_stats_tracks_nothing_and_makes_no_store(mlattack, fresh_dir):
    code, out, _ = mlattack("data", "stats", "--data", "configs/data/synthetic.yaml", "--split", "val")
    assert code == 0 and "synthetic / val" in out
    assert list(fresh_dir.iterdir()) == []


@pytest.mark.parametrize(
    "argv, said",
    [
        (["atack"], "invalid choice: 'atack'.*\n  hint: did you mean attack\\?"),
        (
            ["--config", "configs/demo.yaml", "fit"],
            "not before 'fit'\n  hint: mlattack fit --config configs/demo\\.yaml",
        ),
        (
            ["fit", "--config", "configs/demo.yml"],
            "does not exist: .*\n  hint: did you mean configs/demo\\.yaml\\?",
        ),
    ],
)
def test_a_typo_is_answered_without_importing_a_model_library(fresh_dir, argv, said):
    """Each mistake in the command line's shape costs no Lightning/MLflow import: the same one-line report and
    hint as the full parser gives (tests/cli/test_what_next.py), exit 2, no store."""
    result = probe(fresh_dir, *argv, stderr=True)
    assert result["code"] == 2 and result["heavy"] == []
    assert re.search(said, result["err"]), result["err"]
    assert list(fresh_dir.iterdir()) == []


def test_warmed_help_answers_the_first_time(fresh_dir):
    """The install step (Makefile) warms every subcommand's help: the first `fit --help` in that folder, and the
    first `data stats --help` anywhere, import no model library."""
    subprocess.run(
        [sys.executable, "-c", "from mlattack.cli import warm_help_cache; warm_help_cache()"],
        cwd=fresh_dir,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=True,
    )
    for argv in (["fit", "--help"], ["attack", "--help"], ["data", "stats", "--help"]):
        result = probe(fresh_dir, *argv)
        assert result["code"] == 0 and result["out"].startswith("usage: mlattack") and result["heavy"] == []
    assert list(fresh_dir.iterdir()) == []
