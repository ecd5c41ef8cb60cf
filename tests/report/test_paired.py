"""Paired tests on constructed per-sample records whose answer is known by hand."""

import pandas as pd
import pytest
from scipy.stats import binomtest

from mlattack.report.collect import AttackRun
from mlattack.report.paired import comparisons, exact_p, paired_test, sample_successes


def samples(shown: dict[str, int], valid: dict[str, bool] | None = None) -> pd.DataFrame:
    """A samples.csv as the report reads it back (valid as text, ids in selection order)."""
    return pd.DataFrame(
        {
            "sample_id": list(shown),
            "labels_shown": list(shown.values()),
            "valid": [str((valid or {}).get(k, True)) for k in shown],
        }
    )


def test_scenario_success_follows_the_thresholds_and_failed_samples_never_count():
    # avgLabels 1.5, C = 5: thresholds int(1.5 + 2**n) capped at 5 -> 2, 3, 5, 5, ...
    frame = sample_successes(samples({"a": 2, "b": 3, "c": 5, "d": 5}, {"d": False}), 1.5, 5)
    assert frame["n=0"].tolist() == [True, True, True, False]
    assert frame["n=1"].tolist() == [False, True, True, False]
    assert frame["n=2"].tolist() == [False, False, True, False]
    assert frame["labels shown"].tolist() == [2, 3, 5, 5]


def test_mcnemar_counts_only_discordant_pairs_and_uses_the_exact_binomial():
    # scenario n=0 (threshold 2): A succeeds on s0..s5, B on s0, s1 and s6 -> b = 4 (s2..s5), c = 1 (s6)
    a = sample_successes(samples({f"s{i}": 3 if i < 6 else 1 for i in range(8)}), 1.0, 10)
    b = sample_successes(samples({f"s{i}": 3 if i in (0, 1, 6) else 1 for i in range(8)}), 1.0, 10)
    test = paired_test(a, b)
    assert test["pairs"] == 8
    only_a, only_b, p = test["n=0"]
    assert (only_a, only_b) == (4, 1)
    assert p == pytest.approx(12 / 32)  # P(X <= 1 or X >= 4), X ~ Bin(5, 1/2) = (1 + 5 + 5 + 1) / 32
    # labels shown: A more on s2..s5, B more on s6, ties on s0, s1, s7 -> the same sign test
    assert (test["A more"], test["B more"]) == (4, 1) and test["p"] == pytest.approx(12 / 32)


def test_all_discordant_one_way_is_significant_and_no_discordance_gives_p_one():
    assert exact_p(6, 0) == pytest.approx(2 / 64)
    assert exact_p(0, 0) == 1.0
    assert exact_p(7, 3) == pytest.approx(binomtest(7, 10).pvalue)


def test_pairs_are_matched_by_sample_id_not_by_row_order():
    a = sample_successes(samples({"x": 3, "y": 1, "z": 3}), 1.0, 10)
    b = sample_successes(samples({"z": 3, "w": 3, "x": 1}), 1.0, 10)  # another order, one id not in A
    test = paired_test(a, b)
    assert test["pairs"] == 2  # x and z
    assert test["n=0"][:2] == (1, 0)  # x: only A; z: both


def run(attack: str, network: str = "mlgcn", dataset: str = "voc2007") -> AttackRun:
    return AttackRun(attack, "", attack, network, dataset, "", 0, 1.5, 10, 20, {}, {})


def test_the_study_comparisons_are_found():
    runs = [
        run(a)
        for a in (
            "FGSM",
            "FGM",
            "BIM",
            "PGD",
            "MIFGSM",
            "SLIDE",
            "MLCW-reduced",
            "MLCW-corrected-reduced",
            "BIM[eps=0.1]",
        )
    ]
    runs += [run("FGSM", "mlliw"), run("MLDP", "mlliw")]
    found = {(kind, a.attack, a.network, b.attack, b.network) for kind, a, b in comparisons(runs)}
    assert found == {
        ("one-step vs iterative", "FGSM", "mlgcn", "BIM", "mlgcn"),
        ("one-step vs iterative", "FGSM", "mlgcn", "PGD", "mlgcn"),
        ("one-step vs iterative", "FGSM", "mlgcn", "MIFGSM", "mlgcn"),
        ("reference vs corrected", "MLCW-reduced", "mlgcn", "MLCW-corrected-reduced", "mlgcn"),
        ("network vs network", "FGSM", "mlgcn", "FGSM", "mlliw"),
    }


def test_ablation_rows_are_compared_with_their_reference_row():
    """configs/ablation-mlalp.yaml names its rows MLALP-<switch> beside MLALP-reference: each is paired with it."""
    names = ("MLALP-reference", "MLALP-corrected", "MLALP-no-reset-to-clean", "MLDP", "MLDP-corrected")
    found = {(kind, a.attack, b.attack) for kind, a, b in comparisons([run(a) for a in names])}
    assert found == {
        ("reference vs corrected", "MLALP-reference", "MLALP-corrected"),
        ("reference vs ablation row", "MLALP-reference", "MLALP-no-reset-to-clean"),
        ("reference vs corrected", "MLDP", "MLDP-corrected"),
    }


def test_grid_points_are_paired_network_vs_network():
    """The robustness study attacks a standard and an adversarially trained network with the same grid
    (APGD[eps=0.03], ...): each point is a paired comparison of the two victims, never one attack vs another."""
    runs = [
        run(a, net, "synthetic") for net in ("mlgcn", "mlgcn-at") for a in ("APGD[eps=0.03]", "FGSM[eps=0.1]")
    ]
    runs += [run("PGD[eps=0.1]", "mlgcn", "synthetic"), run("BIM[eps=0.1]", "mlgcn", "synthetic")]
    found = {(kind, a.attack, a.network, b.attack, b.network) for kind, a, b in comparisons(runs)}
    assert found == {
        ("network vs network", "APGD[eps=0.03]", "mlgcn", "APGD[eps=0.03]", "mlgcn-at"),
        ("network vs network", "FGSM[eps=0.1]", "mlgcn", "FGSM[eps=0.1]", "mlgcn-at"),
    }
