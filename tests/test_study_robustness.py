"""configs/study-robustness.yaml parses as a study, and every file it names builds what it promises."""

import yaml
from jsonargparse import ArgumentParser

from mlattack.defences import Preprocessing
from mlattack.resources import find_config
from mlattack.study import study_parser


def test_the_robustness_study_config_parses_and_its_defences_build():
    cfg = study_parser().parse_args(["--config", str(find_config("configs/study-robustness.yaml"))])
    names = [m.name for m in cfg.models]
    assert {"mlgcn", "mlgcn-at", "query2label", "query2label-at"} <= set(names)
    trained = [m for m in cfg.models if m.fit_args and "model.adversarial" in m.fit_args]
    assert {m.name for m in trained} == {"mlgcn-at", "query2label-at"}
    defended = [m for m in cfg.models if m.attack_args]
    assert {bool(m.attack_args.get("adaptive")) for m in defended} == {True, False}
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--defence", type=Preprocessing)
    for m in defended:
        spec = yaml.safe_load(find_config(m.attack_args["defence"]).read_text())
        built = parser.instantiate_classes(parser.parse_object({"defence": spec}))
        assert isinstance(built.defence, Preprocessing)


def test_the_stronger_robustness_attacks_build_as_named():
    """configs/attack-robustness-strong.yaml (docs/DEFENCES.md, 64 px demo): its grid points keep their own names
    and settings; the margin-loss row gets the margin loss."""
    from mlattack.attacks.losses import multilabel_margin, summed_bce
    from mlattack.cli.attack import attack_parser

    parser = attack_parser()
    cfg = parser.parse_args(
        ["--config", str(find_config("configs/attack-robustness-strong.yaml")), "--model", "x"]
    )
    built = {
        name: attack for spec in parser.instantiate_classes(cfg).attacks for name, attack, _ in spec.build()
    }
    settings = {name: (type(a).__name__, a.eps, a.nb_iter, a.loss_fn) for name, a in built.items()}
    assert settings == {
        "APGD-30it[eps=0.03]": ("APGD", 0.03, 30, summed_bce),
        "APGD-30it-margin[eps=0.03]": ("APGD", 0.03, 30, multilabel_margin),
        "APGD[eps=0.3]": ("APGD", 0.3, 10, summed_bce),
        "PGD[eps=0.3]": ("PGD", 0.3, 10, summed_bce),
        "APGD-30it[eps=0.3]": ("APGD", 0.3, 30, summed_bce),
    }
    assert cfg.mode == "fast" and built["PGD[eps=0.3]"].eps_iter == 0.075


def test_the_margin_check_builds_as_named():
    from mlattack.attacks.losses import multilabel_margin
    from mlattack.cli.attack import attack_parser

    parser = attack_parser()
    cfg = parser.parse_args(
        ["--config", str(find_config("configs/attack-robustness-margin.yaml")), "--model", "x"]
    )
    built = {
        name: attack for spec in parser.instantiate_classes(cfg).attacks for name, attack, _ in spec.build()
    }
    assert {n: (a.eps, a.nb_iter, a.loss_fn) for n, a in built.items()} == {
        "APGD-30it-margin[eps=0.1]": (0.1, 30, multilabel_margin),
        "APGD-30it-margin[eps=0.3]": (0.3, 30, multilabel_margin),
    }
