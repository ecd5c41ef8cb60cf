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
