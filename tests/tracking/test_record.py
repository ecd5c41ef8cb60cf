"""The attack-run record's names: metric names that group in the MLflow UI, read back under both spellings."""

import torch
from jsonargparse import ArgumentParser

from mlattack.attacks import FGM, MLDP, PGD
from mlattack.attacks.base import Attack
from mlattack.evaluation.metrics import ShowManyLabels
from mlattack.tracking.record import attack_config, attack_params, headline, internal_metrics, logged_metrics


def computed_metrics() -> dict[str, float]:
    m = ShowManyLabels(4, torch.tensor([1, 2, 3, 4, 4, 4, 4, 4]))
    norms = {k: torch.tensor([0.1, 0.2, 0.3]) for k in ("l2", "l1", "linf", "rmsd", "mean_abs")}
    cost = {
        "forwards": torch.tensor([3.0, 3, 3]),
        "backwards": torch.tensor([3.0, 3, 3]),
        "peak_mb": torch.tensor([10.0, 12, 11]),
    }
    m.update(torch.tensor([1, 2, 4]), norms, torch.tensor([3.0, 3, 3]), torch.tensor([0.5, 0.5, 0.5]),
             torch.tensor([False, False, True]), cost=cost)  # fmt: skip
    return {k: float(v) for k, v in m.compute().items()}


def test_logged_names_group_in_the_ui_and_read_back_to_the_internal_names():
    values = computed_metrics()
    logged = logged_metrics(values)
    assert [f"success/n{k}" for k in range(8)] == [k for k in logged if k.startswith("success/")]
    assert {"labels_shown", "norm/l2", "norm/linf", "norm_success/l2_n0", "time/seconds_per_sample"} <= set(
        logged
    )
    assert not any(k.startswith("success_rate") or k.endswith("_mean") for k in logged)
    assert logged["time/attack_seconds"] == 1.5  # 3 samples x 0.5 s: the attack's own wall time
    assert logged["n_at_50pct"] == 1  # 3/3 show >= 1 label, 2/3 >= 2, 1/3 >= 3
    assert logged["cost/forward_passes_per_sample"] == 3.0 and logged["cost/peak_memory_mb"] == 12.0
    back = internal_metrics(logged)
    for key, value in values.items():
        assert back[key] == value, key
    unmeasured = logged_metrics({**values, "peak_memory_mb": float("nan")})
    assert "cost/peak_memory_mb" not in unmeasured  # MLflow gets no NaN: a metric not measured is not logged
    old = {"success_rate_n0": 0.5, "l2_mean": 0.2, "labels_shown_mean": 2.0, "l2_mean_success_n3": 0.1}
    assert internal_metrics(old) == old  # stores written before the rename still report


def test_headline_is_the_largest_scenario_with_half_the_samples():
    assert headline({f"success_rate_n{k}": v for k, v in enumerate([1, 0.9, 0.5, 0.49, 0, 0, 0, 0])}) == 2
    assert headline({f"success_rate_n{k}": 0.1 for k in range(8)}) == -1


def test_attack_params_state_the_norm_and_one_iteration_name():
    pgd, mldp, fgm = (
        attack_params(a.hyperparameters(), a.norm) for a in (PGD(eps=0.3, nb_iter=7), MLDP(max_iter=9), FGM())
    )
    assert (pgd["attack.norm"], pgd["attack.iterations"], pgd["attack.eps"]) == ("linf", 7, 0.3)
    assert (mldp["attack.norm"], mldp["attack.iterations"]) == ("l2", 9)
    assert fgm["attack.norm"] == "l2" and "attack.iterations" not in fgm
    assert not any(k in p for p in (pgd, mldp) for k in ("attack.nb_iter", "attack.max_iter"))


def test_every_shipped_attack_declares_its_norm():
    """The norm lives on the attack class (APGD's is a setting, logged from its hyperparameters)."""
    import mlattack.attacks as attacks

    declared = {
        name: getattr(attacks, name).norm
        for name in attacks.__all__
        if name not in ("Attack", "AttackResult")
    }
    assert declared == {
        "APGD": None, "BIM": "linf", "FGM": "l2", "FGSM": "linf", "LabelGraphPGD": "linf", "MIFGSM": "linf",
        "MLALP": "linf", "MLCW": "l2", "MLDP": "l2", "PGD": "linf", "SLIDE": "l1",
    }  # fmt: skip
    apgd = attacks.APGD(norm="L2")
    assert attack_params(apgd.hyperparameters(), apgd.norm)["attack.norm"] == "l2"


def test_attack_config_rebuilds_the_attack_as_it_ran():
    pgd = PGD(eps=0.05, nb_iter=4, eps_iter=0.01, early_stop=True)
    cfg = attack_config(pgd)
    assert cfg["class_path"] == "mlattack.attacks.pgd.PGD" and cfg["init_args"]["early_stop"] is True
    parser = ArgumentParser()
    parser.add_argument("--attack", type=Attack)
    rebuilt = parser.instantiate_classes(parser.parse_object({"attack": cfg})).attack
    assert rebuilt.hyperparameters() == pgd.hyperparameters()
