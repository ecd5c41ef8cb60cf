"""The crossover table: at each eps, FGSM's labels shown beside the grid points of an iterative attack."""

import math

from mlattack.report.collect import AttackRun
from mlattack.report.crossover import crossover_table


def run(
    name: str, shown: float, passes: float, tags: dict[str, str], sweep=None, start: int = 0
) -> AttackRun:
    return AttackRun(
        run_id=name, parent_id="p", attack=name, network="net", dataset="toy", model_uri="m", start_time=start,
        avg_labels=2.0, num_samples=10, num_classes=5, params={}, sweep=sweep, tags=tags,
        metrics={"labels_shown_mean": shown, "forwards_per_sample": passes},
    )  # fmt: skip


def grid_point(eps: float, nb_iter: int, eps_iter: float, shown: float, start: int = 0) -> AttackRun:
    tags = {
        "mlattack.grid_base": "BIM",
        "mlattack.grid_params": "eps_iter,nb_iter,eps",
        "mlattack.grid.eps_iter": str(eps_iter),
        "mlattack.grid.nb_iter": str(nb_iter),
        "mlattack.grid.eps": str(eps),
    }
    return run(f"BIM[eps_iter={eps_iter},nb_iter={nb_iter},eps={eps}]", shown, nb_iter, tags, start=start)


def test_each_eps_compares_fgsm_with_the_grid_points_and_names_the_cheapest_that_beats_it() -> None:
    runs = [
        run("FGSM[eps=0.1]", 3.0, 1, {}, sweep=("FGSM", "eps", 0.1)),
        run("FGSM[eps=0.3]", 6.0, 1, {}, sweep=("FGSM", "eps", 0.3)),
        run(
            "PGD[eps=0.1]", 9.0, 30, {}, sweep=("PGD", "eps", 0.1)
        ),  # another sweep: not the one-step baseline
        grid_point(0.1, 10, 0.001, 2.0),
        grid_point(0.1, 30, 0.001, 2.5),
        grid_point(0.1, 10, 0.01, 4.0),
        grid_point(0.1, 30, 0.01, 7.0),
        grid_point(0.3, 10, 0.01, 5.0),
        grid_point(0.3, 30, 0.01, 5.5),
        grid_point(0.3, 30, 0.01, 4.0, start=-1),  # an older run of the same point loses to the latest
        grid_point(0.03, 30, 0.001, 9.0),  # FGSM was not run at eps 0.03: no row
    ]
    table = crossover_table(runs)
    assert list(table.index) == ["BIM", "BIM"] and list(table["eps"]) == ["0.1", "0.3"]
    at_01, at_03 = table.iloc[0], table.iloc[1]
    assert at_01["FGSM labels shown"] == 3.0 and at_01["points beating it"] == "2 of 4"
    assert at_01["best labels shown"] == 7.0 and at_01["best point"] == "eps_iter=0.01, nb_iter=30"
    assert (
        at_01["cheapest point beating it"] == "eps_iter=0.01, nb_iter=10" and at_01["its labels shown"] == 4.0
    )
    assert at_03["points beating it"] == "0 of 2" and at_03["cheapest point beating it"] == "none"
    assert math.isnan(at_03["its labels shown"])
    assert crossover_table(runs[3:]) is None  # no FGSM sweep: nothing to compare
