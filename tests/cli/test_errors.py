"""Every expected mistake ends, through the real ``mlattack`` entry point, as one line naming what to fix.

Form: ``mlattack: error: <file or field>: <what was wrong and what was expected>`` plus at most one
``  hint: ...`` line, exit code 2, no traceback. All cases run in this process (imports are paid once).
"""

import re
import shutil
import socket

import pytest
import yaml

from mlattack.resources import config_dir
from tests.data.fixtures import NUS_CSV_ROWS, make_nuswide_csv, make_voc

CONFIGS = config_dir()
ONE_LINE = re.compile(r"mlattack: error: (?P<message>[^\n]+)\n(?:  hint: [^\n]+\n)?")
TINY_FIT = ["--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false", "--trainer.accelerator", "cpu",
            "--data.image_size", "16", "--data.num_workers", "0"]  # fmt: skip
SYNTH = ["--data", f"{CONFIGS}/data/synthetic.yaml", "--data.options", '{"num_classes": 4, "num_samples": 8}']


def fill(arg: str, paths: dict) -> str:
    """``{name}`` -> the path of that input (other braces, e.g. of a JSON value, are left alone)."""
    return re.sub(r"\{(\w+)\}", lambda m: str(paths.get(m.group(1), m.group(0))), arg)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """Broken inputs of every kind, written once: {name: path}."""
    t = tmp_path_factory.mktemp("inputs")
    p = {"tmp": t, "configs": CONFIGS}
    p["voc07"] = make_voc(t / "voc07")
    p["voc12"] = make_voc(t / "voc12", year="2012")
    p["voc07_dir"] = p["voc07"] / "VOCdevkit" / "VOC2007"
    p["voc12_dir"] = p["voc12"] / "VOCdevkit" / "VOC2012"
    p["no_class_file"] = make_voc(t / "noclass")
    (p["no_class_file"] / "VOCdevkit/VOC2007/ImageSets/Main/cat_train.txt").unlink()
    p["bad_line"] = make_voc(t / "badline")
    (p["bad_line"] / "VOCdevkit/VOC2007/ImageSets/Main/dog_train.txt").write_text("000001 yes\n")
    p["corrupt"] = make_voc(t / "corrupt")
    jpg = p["corrupt"] / "VOCdevkit/VOC2007/JPEGImages/000007.jpg"
    jpg.write_bytes(jpg.read_bytes()[:40])
    nus = make_nuswide_csv(t / "nus")  # images/<file>; moved where the CSV does not say
    shutil.move(nus / "images", nus / "photos")
    p["nus"] = nus
    user_voc = t / "my-voc.yaml"  # a user's own data file without `options:`
    user_voc.write_text(yaml.safe_dump({"source": "voc2007", "root": str(p["voc07"]), "image_size": 16}))
    p["user_voc"] = user_voc
    p["corrupt_data"] = t / "corrupt.yaml"
    p["corrupt_data"].write_text(
        yaml.safe_dump(
            {
                "source": "voc2007",
                "root": str(p["corrupt"]),
                "image_size": 16,
                "batch_size": 4,
                "num_workers": 1,
                "options": {},
            }
        )
    )
    (t / "typo.yaml").write_text(yaml.safe_dump({"trainer": {"max_epoch": 1}}))
    (t / "broken.yaml").write_text("trainer:\n  max_epochs: [1\n")
    (t / "garbage.ckpt").write_bytes(b"not a checkpoint at all")
    (t / "bad-eps.yaml").write_text(
        yaml.safe_dump({"attacks": [{"config": "configs/attack/pgd.yaml", "overrides": {"eps": -0.1}}]})
    )
    (t / "one-attack.yaml").write_text(yaml.safe_dump({"attacks": [{"config": "configs/attack/fgsm.yaml"}]}))
    (t / "nested-data.yaml").write_text(
        yaml.safe_dump(
            {"data": "configs/data/synthetic.yaml", "attacks": [{"config": "configs/attack/fgsm.yaml"}]}
        )
    )
    (t / "no-attack-file.yaml").write_text(
        yaml.safe_dump({"attacks": [{"config": "configs/attack/nope.yaml"}]})
    )
    return p


FIT = ["fit", "--config", "{configs}/demo.yaml"]
TEST = ["test", "--config", "{configs}/demo.yaml"]
ATTACK = ["attack", *SYNTH, "--output_dir", "{tmp}/attacks"]
STATS = ["data", "stats", "--data.image_size", "16"]

# (id, argv, what the message must say)
CASES = [
    # -- config files and options
    ("config-missing", [*FIT, "--config", "{tmp}/nope.yaml"], r"config: file does not exist: '.*nope\.yaml'"),
    (
        "config-typo-key",
        [*FIT, "--config", "{tmp}/typo.yaml"],
        r"typo\.yaml: subcommand 'fit' does not accept option 'trainer\.max_epoch'\n"
        r"  hint: did you mean trainer\.max_epochs\?",
    ),
    ("config-bad-yaml", [*FIT, "--config", "{tmp}/broken.yaml"], r"broken\.yaml"),
    (
        "config-nested-shipped",
        ["attack", "--config", "{tmp}/nested-data.yaml", "--model", "models:/nope@best"],
        r"unable to load config 'configs/data/synthetic\.yaml'.*\n  hint: .*mlattack's configs/data/synthetic\.yaml is "
        r".*configs/data/synthetic\.yaml: give that path",
    ),
    (
        "option-bad-type",
        [*FIT, "--trainer.max_epochs", "abc"],
        r"trainer\.max_epochs: expected int or null, got 'abc'",
    ),
    (
        "option-unknown",
        [*FIT, "--trainer.max_epoc", "3"],
        r"trainer\.max_epoc: unknown option\n  hint: did you mean trainer\.max_epochs\?",
    ),
    (
        "option-moved-lr",
        [*FIT, "--model.lr", "0.1"],
        r"model\.lr: unknown option\n  hint: .*optimizer\.init_args\.lr",
    ),
    (
        "option-bad-dict",
        [*FIT, "--data.options", "{bad"],
        r"data\.options: expected dict\[str, Any\] or null",
    ),
    ("option-bad-choice", [*STATS, "--split", "everything"], r"error: split: invalid choice: 'everything'"),
    ("option-no-subcommand", [], r"error: give a subcommand: fit, validate, test"),
    ("option-no-data-subcommand", ["data"], r"error: data: give a subcommand: stats"),
    (
        "option-required-missing",
        ["test"],
        r"error: model\.net: required, not given\n  hint: `mlattack test --help`",
    ),
    (
        "option-trainer-misconfigured",
        [*FIT, *TINY_FIT, *SYNTH, "--trainer.accelerator", "tpu"],
        r"error: trainer: ",
    ),
    (
        "class-path-unknown",
        [*FIT, "--model.net", "mlattack.models.Nope"],
        r"model\.net: cannot use class_path 'mlattack\.models\.Nope' \(module 'mlattack\.models' has no attribute",
    ),
    # -- bad values
    ("value-batch-size", [*STATS, "--data.batch_size", "0"], r"data\.batch_size must be > 0, got 0"),
    ("value-image-size", [*STATS, "--data.image_size", "-3"], r"data\.image_size must be > 0, got -3"),
    (
        "value-lr-scale",
        [*FIT, *TINY_FIT, "--model.backbone_lr_scale", "-1"],
        r"model\.backbone_lr_scale must be >= 0, got -1",
    ),
    (
        "value-num-samples",
        [*ATTACK, "--config", "{tmp}/one-attack.yaml", "--model", "x.ckpt", "--num_samples", "0"],
        r"num_samples must be > 0, got 0",
    ),
    (
        "attack-bad-eps",
        [*ATTACK, "--config", "{tmp}/bad-eps.yaml", "--model", "x.ckpt"],
        r"pgd\.yaml: invalid attack config: .*eps must be a finite number > 0, got -0\.1",
    ),
    (
        "attack-config-missing",
        [*ATTACK, "--config", "{tmp}/no-attack-file.yaml", "--model", "x.ckpt"],
        r"attack config 'configs/attack/nope\.yaml' not found",
    ),
    # -- data
    (
        "data-unknown-source",
        [*STATS, "--data.source", "imagenet"],
        r"data\.source: unknown source 'imagenet'",
    ),
    (
        "data-root-missing",
        [*STATS, "--data", "{configs}/data/voc2007.yaml", "--data.root", "{tmp}/nowhere"],
        r"data\.root: no VOC2007 devkit at .*nowhere",
    ),
    (
        "data-voc2012-given-voc2007",
        [*STATS, "--data", "{configs}/data/voc2012.yaml", "--data.root", "{voc07_dir}"],
        r"data\.root: .*VOC2007 is the VOC2007 devkit but the source is voc2012\n  hint: use --data\.source voc2007",
    ),
    (
        "data-voc2007-given-voc2012",
        [*STATS, "--data", "{configs}/data/voc2007.yaml", "--data.root", "{voc12_dir}"],
        r"is the VOC2012 devkit but the source is voc2007",
    ),
    (
        "data-voc2007-only-2012-there",
        [*STATS, "--data", "{configs}/data/voc2007.yaml", "--data.root", "{voc12}"],
        r"no VOC2007 devkit at .*\n  hint: found VOC2012 there: use --data\.source voc2012",
    ),
    (
        "data-class-list-missing",
        [*STATS, "--data", "{configs}/data/voc2007.yaml", "--data.root", "{no_class_file}"],
        r"VOC class list for 'cat': file .*cat_train\.txt does not exist",
    ),
    (
        "data-malformed-line",
        [*STATS, "--data", "{configs}/data/voc2007.yaml", "--data.root", "{bad_line}"],
        r"dog_train\.txt:1: expected '<image_id> <1\|-1\|0>'",
    ),
    (
        "data-nuswide-no-images",
        [*STATS, "--data", "{configs}/data/nuswide.yaml", "--data.root", "{nus}"],
        r"data\.root: none of the \d+ NUS-WIDE \w+ images is under .*\n  hint: images/\S+ is at .*photos/",
    ),
    (
        "data-options-of-another-source",
        [*FIT, *TINY_FIT, "--data", "{user_voc}"],
        r"data\.options\.num_classes: not an option of source 'voc2007'.*\n  hint: .*options: \{\}",
    ),
    (
        "data-option-unknown",
        [*STATS, "--data.options", '{"nope": 1}'],
        r"data\.options\.nope: not an option of source 'synthetic'",
    ),
    (
        "data-corrupt-jpeg-in-worker",
        [
            *TEST,
            "--data",
            "{corrupt_data}",
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.accelerator",
            "cpu",
        ],
        r"000007\.jpg: unreadable or truncated image .*expected a valid JPEG/PNG file",
    ),
    # -- models and checkpoints
    (
        "ckpt-missing",
        [*TEST, *TINY_FIT, *SYNTH, "--ckpt_path", "{tmp}/nope.ckpt"],
        r"--ckpt_path: no checkpoint file '.*nope\.ckpt'\n  hint: ",
    ),
    (
        "ckpt-garbage",
        [*TEST, *TINY_FIT, *SYNTH, "--ckpt_path", "{tmp}/garbage.ckpt"],
        r"checkpoint .*garbage\.ckpt: not a PyTorch checkpoint .*expected a checkpoint written by `mlattack fit`",
    ),
    (
        "ckpt-unregistered-uri",
        [*TEST, *TINY_FIT, *SYNTH, "--ckpt_path", "models:/nope@best"],
        r"--ckpt_path: model 'models:/nope@best' could not be loaded from tracking store",
    ),
    (
        "ckpt-uri-for-fit",
        [*FIT, *TINY_FIT, *SYNTH, "--ckpt_path", "models:/nope@best"],
        r"--ckpt_path: models:/nope@best is a registered network, not a training checkpoint",
    ),
    (
        "attack-model-unregistered",
        [*ATTACK, "--config", "{tmp}/one-attack.yaml", "--model", "models:/nope@best"],
        r"--model 'models:/nope@best': no such registered model or alias",
    ),
    (
        "attack-model-file-missing",
        [*ATTACK, "--config", "{tmp}/one-attack.yaml", "--model", "{tmp}/nope.ckpt"],
        r"model '.*nope\.ckpt': not a models:/",
    ),
    # -- tracking server
    (
        "tracking-server-down",
        [*FIT, *TINY_FIT, *SYNTH],
        r"MLflow tracking server http://127\.0\.0\.1:\d+ is unreachable",
    ),
]


@pytest.mark.parametrize(("case", "argv", "expected"), CASES, ids=[c[0] for c in CASES])
def test_user_error_is_one_line_with_exit_code_2(tree, mlattack, monkeypatch, tmp_path, case, argv, expected):
    monkeypatch.chdir(tmp_path)  # nothing a failed command writes lands in the repository
    if case == "tracking-server-down":
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{closed_port()}")
    code, out, err = mlattack(*[fill(a, tree) for a in argv])
    assert code == 2, err
    assert "Traceback" not in err and "Traceback" not in out
    assert ONE_LINE.fullmatch(err), f"not one line (+ hint):\n{err}"
    assert re.search(expected, err), err


def test_debug_shows_the_traceback(tree, mlattack, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    argv = ["data", "stats", "--data.batch_size", "0"]
    with pytest.raises(ValueError, match="data.batch_size must be > 0"):
        mlattack(*argv, "--debug")
    monkeypatch.setenv("MLATTACK_DEBUG", "1")
    from mlattack.cli import main

    with pytest.raises(ValueError, match="data.batch_size must be > 0"):
        main(argv)


def test_a_bug_keeps_its_traceback(mlattack, monkeypatch):
    """Only expected mistakes are cut to one line: an internal error is not hidden."""
    import mlattack.cli.tools as commands

    def broken(parser, cfg, run):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(commands.TOOLS["demo"], "run", broken)
    with pytest.raises(ZeroDivisionError):
        mlattack("demo")


def test_cases_cover_each_kind_of_input():
    kinds = {c[0].split("-")[0] for c in CASES}
    assert {"config", "option", "value", "data", "ckpt", "attack", "tracking"} <= kinds
    assert len(CASES) >= 20 and NUS_CSV_ROWS
