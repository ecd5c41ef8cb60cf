"""`mlattack report` on a real store: tables equal the runs' metrics, files and figures exist, sweeps and labels."""

import csv
import io
import warnings

import mlflow
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mlattack.cli import main
from mlattack.intervals import format_rate, wilson_interval
from mlattack.report import analyse_labels, build_report
from mlattack.report.plots import attack_colour
from tests.evaluation.toy import ToyColours
from tests.report.test_html_and_figures import Links

NETS = ("linearcolournet", "shiftedcolournet")


@pytest.fixture(scope="module")
def report(populated_store, tmp_path_factory):
    uri, _, _ = populated_store
    return build_report(tmp_path_factory.mktemp("report") / "out", tracking_uri=uri)


def test_success_and_norm_tables_equal_the_runs_metrics(populated_store, report):
    _, attack_reports, _ = populated_store
    tables = report.output_dir / "tables"
    for net in NETS:
        assert not list(tables.glob(f"summary_{net}_*"))  # one success table: its numbers are printed once
        for kind in ("success", "norms", "l2_success"):
            for ext in ("md", "csv", "tex"):
                assert (tables / f"{kind}_{net}_toy.{ext}").stat().st_size > 0
        success = pd.read_csv(tables / f"success_{net}_toy.csv", index_col="attack")
        norms = pd.read_csv(tables / f"norms_{net}_toy.csv", index_col="attack")
        l2 = pd.read_csv(tables / f"l2_success_{net}_toy.csv", index_col="attack")
        metrics = attack_reports[net].metrics
        baseline = [name for name in success.index if name.startswith("no attack")]
        assert sorted(set(success.index) - set(baseline)) == sorted(metrics)
        assert list(success.index[: len(baseline)]) == baseline  # first: what needs no attack
        for name in baseline:  # one row per N, equal to the clean metrics of the attacks with that N
            same_n = [m for m in metrics.values() if m["num_samples"] == success.loc[name, "N"]]
            assert same_n
            for k in range(8):
                assert success.loc[name, f"n={k}"] == pytest.approx(
                    100 * same_n[0][f"clean_success_rate_n{k}"]
                )
            assert success.loc[name, "labels shown"] == pytest.approx(same_n[0]["clean_labels_shown_mean"])
        for attack, m in metrics.items():
            n = int(m["num_samples"])
            for k in range(8):
                assert success.loc[attack, f"n={k}"] == pytest.approx(100 * m[f"success_rate_n{k}"])
                low, high = wilson_interval(round(m[f"success_rate_n{k}"] * n), n)
                assert success.loc[attack, f"n={k} low"] == pytest.approx(100 * low)
                assert success.loc[attack, f"n={k} high"] == pytest.approx(100 * high)
            assert success.loc[attack, "N"] == m["num_samples"]
            assert success.loc[attack, "labels shown"] == pytest.approx(m["labels_shown_mean"])
            assert norms.loc[attack, "L2 (all)"] == pytest.approx(m["l2_mean"])
            assert norms.loc[attack, "Linf (all)"] == pytest.approx(m["linf_mean"])
            assert norms.loc[attack, "RMSD (all)"] == pytest.approx(m["rmsd_mean"])
            if "l2_mean_success_n0" in m:  # the study's average: over the samples that succeeded
                assert norms.loc[attack, "L2 (succ. n=0)"] == pytest.approx(m["l2_mean_success_n0"])
                assert l2.loc[attack, "L2 n=0"] == pytest.approx(m["l2_mean_success_n0"])
            else:
                assert pd.isna(norms.loc[attack, "L2 (succ. n=0)"])
        # the study's row order, and the printed Markdown carries the same (rounded) numbers
        attacks = [name for name in success.index if name not in baseline]
        assert attacks[:1] == ["FGSM"] and attacks[-2:] == ["BIM", "MIFGSM"]
        md = report.markdown[f"success_{net}_toy"]
        bim = next(line for line in md.splitlines() if line.startswith("| BIM |"))
        n = int(metrics["BIM"]["num_samples"])  # every printed rate carries its interval; N in the caption
        assert f"| {format_rate(round(metrics['BIM']['success_rate_n0'] * n), n)} |" in bim
        assert " low" not in md.splitlines()[2] and "N = 6–10 (per row)" in md.splitlines()[0]  # MIFGSM: 6
    tex = (tables / "success_linearcolournet_toy.tex").read_text()
    assert "\\begin{tabular}" in tex and "FGSM{[}eps=0.1{]}" in tex
    assert "\\% {[}" in tex  # the interval beside each rate


def test_comparison_index_and_report_run(populated_store, report):
    uri, attack_reports, _ = populated_store
    comp = pd.read_csv(report.output_dir / "tables" / "compare_toy.csv", index_col="attack")
    for net in NETS:
        assert comp.loc["BIM", f"n=0 {net}"] == pytest.approx(
            100 * attack_reports[net].metrics["BIM"]["success_rate_n0"]
        )
    assert np.isnan(comp.loc["FGSM[eps=0.1]", "n=0 shiftedcolournet"])  # swept on one network only
    index = (report.output_dir / "index.md").read_text()
    for f in report.files:
        if f.suffix == ".png":
            assert f"(figures/{f.name})" in index
    runs = pd.read_csv(report.output_dir / "runs.csv")
    assert len(runs) == len(report.runs) == sum(len(r.child_run_ids) for r in attack_reports.values())
    client = mlflow.MlflowClient(uri)
    run = client.get_run(report.run_id)
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "mlattack-reports"
    top = {a.path for a in client.list_artifacts(report.run_id)}
    assert {"index.md", "runs.csv", "tables", "figures"} <= top
    logged = {a.path for a in client.list_artifacts(report.run_id, "figures")}
    assert {f"figures/{f.name}" for f in report.files if f.suffix == ".png"} == logged


def test_sweep_gives_one_curve_point_per_value(populated_store, report):
    uri, attack_reports, _ = populated_store
    curve = pd.read_csv(
        report.output_dir / "tables" / "budget_linearcolournet_toy_FGSM_eps.csv", index_col="eps"
    )
    assert list(curve.index) == [0.02, 0.1, 0.3]
    metrics = attack_reports["linearcolournet"].metrics
    for eps in (0.02, 0.1, 0.3):
        for k in range(8):
            assert curve.loc[eps, f"n={k}"] == pytest.approx(
                100 * metrics[f"FGSM[eps={eps}]"][f"success_rate_n{k}"]
            )
    assert (report.output_dir / "figures" / "budget_linearcolournet_toy_FGSM_eps.png").is_file()
    assert not list((report.output_dir / "tables").glob("budget_shiftedcolournet*"))


def test_figures_are_real_images(report):
    pngs = [f for f in report.files if f.suffix == ".png"]
    names = {p.stem for p in pngs}
    for net in NETS:
        assert {f"success_{net}_toy", f"labels_{net}_toy"} <= names
    for p in pngs:
        with Image.open(p) as im:
            assert im.format == "PNG" and im.width >= 300 and im.height >= 200
            colours = im.convert("RGB").getcolors(maxcolors=1 << 20)
            assert colours is not None and len(colours) > 20, p.name  # drawn, not a blank canvas


def test_attack_colours_are_fixed_and_distinct():
    study = ["FGSM", "FGM", "BIM", "PGD", "MIFGSM", "SLIDE", "MLCW", "MLDP", "MLALP"]
    assert len({attack_colour(a) for a in study}) == 9
    assert attack_colour("PGD[eps=0.01]") == attack_colour("PGD") and attack_colour(
        "MLCW-reduced"
    ) == attack_colour("MLCW")
    assert attack_colour("MyAttack") == attack_colour("MyAttack")


def _direct_rates(client, run_id):
    text = open(client.download_artifacts(run_id, "samples.csv")).read()
    rows = [r for r in csv.DictReader(io.StringIO(text)) if r["valid"] == "True"]
    rates = {}
    for j in range(5):
        label = f"c{j}"
        off = [r for r in rows if label not in r["true_labels"].split(";")]
        on = [r for r in off if label in r["labels_shown_names"].split(";")]
        rates[label] = len(on) / len(off) if off else float("nan")
    return rows, rates


def test_label_analysis_equals_a_direct_computation(populated_store, report):
    uri, attack_reports, _ = populated_store
    client = mlflow.MlflowClient(uri)
    rep = attack_reports["linearcolournet"]
    got = pd.read_csv(
        report.output_dir / "tables" / "labels_linearcolournet_toy_rates.csv", index_col="attack"
    )
    labels = pd.read_csv(report.output_dir / "tables" / "labels_linearcolournet_toy.csv", index_col="label")
    samples = {}
    for name, run_id in rep.child_run_ids.items():
        rows, rates = _direct_rates(client, run_id)
        samples[name] = pd.DataFrame(rows)
        for label, rate in rates.items():
            assert got.loc[name, label] == pytest.approx(rate, nan_ok=True), (name, label)
    assert max(got.max()) > 0  # some label was turned on, so the check above is not all zeros
    # frequencies come from the training split (the toy source is loadable), as label counts / images
    train = ToyColours(split="train").targets.numpy()
    for j in range(5):
        assert labels.loc[f"c{j}", "frequency"] == pytest.approx(train[:, j].mean())
    # mean rate over attacks and the "resistant first" order in the Markdown table
    assert labels["mean_rate"].to_numpy() == pytest.approx(got.mean(axis=0)[labels.index].to_numpy())
    md = report.markdown["labels_linearcolournet_toy"]
    first = md.split("|---|---|---|---|---|---|\n", 1)[1].split(" |", 1)[0].strip("| ")
    assert first == labels["mean_rate"].idxmin()

    # without training statistics: frequencies within the distinct attacked samples
    fallback = analyse_labels(samples)
    truth = {r["index"]: r["true_labels"].split(";") for rows in samples.values() for _, r in rows.iterrows()}
    for j in range(5):
        direct = np.mean([f"c{j}" in t for t in truth.values()])
        assert fallback.labels.loc[f"c{j}", "frequency"] == pytest.approx(direct)
    assert "attacked samples" in fallback.source


def test_filters_and_cli(populated_store, tmp_path, capsys):
    uri, attack_reports, _ = populated_store
    only = build_report(
        tmp_path / "a",
        tracking_uri=uri,
        network="shiftedcolournet",
        filter_string="tags.`mlattack.attack_name` != 'FGSM'",
    )
    assert sorted(r.attack for r in only.runs) == ["BIM", "MIFGSM"]
    assert not (tmp_path / "a" / "tables" / "compare_toy.csv").exists()  # one network: nothing to compare
    with pytest.raises(ValueError, match="no finished attack runs"):
        build_report(tmp_path / "b", tracking_uri=uri, dataset="voc2007")
    with pytest.raises(ValueError, match="--filter"):
        build_report(tmp_path / "c", tracking_uri=uri, filter_string="params.network ==== 'x'")
    with pytest.raises(ValueError, match="--experiment"):
        build_report(tmp_path / "d", tracking_uri=uri, experiment="nope")

    main(
        [
            "report",
            "--tracking_uri",
            uri,
            "--output_dir",
            str(tmp_path / "cli"),
            "--network",
            "linearcolournet",
        ]
    )
    printed = capsys.readouterr().out
    assert "| attack | N | avgLabels | n=0 |" in printed and "| MIFGSM | 6 |" in printed
    assert (tmp_path / "cli" / "index.md").is_file()


def test_architecture_map_puts_networks_side_by_side_with_their_clean_map(populated_store, report):
    """Two networks on one dataset: one row per (network, attack) with the model's clean mAP, and both figures."""
    _, attack_reports, _ = populated_store
    arch = pd.read_csv(report.output_dir / "tables" / "architectures_toy.csv", index_col="attack")
    maps = {"linearcolournet": 0.81, "shiftedcolournet": 0.67}
    for net, rep in attack_reports.items():
        rows = arch[arch["network"] == net]
        assert sorted(rows.index) == sorted(rep.metrics)
        assert (rows["clean mAP"] == maps[net]).all()
        for attack, m in rep.metrics.items():
            assert rows.loc[attack, "n=0"] == pytest.approx(100 * m["success_rate_n0"])
            assert rows.loc[attack, "labels shown"] == pytest.approx(m["labels_shown_mean"])
    for name in ("architectures_toy.png", "shown_vs_l2_toy.png"):
        assert (report.output_dir / "figures" / name).stat().st_size > 10_000


def test_runs_logged_under_the_old_metric_names_still_report(tmp_path):
    """Stores written before the rename (``success_rate_n0``, ``l2_mean``, ...) give the same tables."""
    from mlattack.report.collect import collect_runs
    from mlattack.report.tables import norms_table, success_table

    uri = f"sqlite:///{tmp_path / 'old.db'}"
    client = mlflow.MlflowClient(uri)
    exp = client.create_experiment("old-attacks")
    parent = client.create_run(exp, tags={"mlattack.run_key": "k"}).info.run_id
    client.log_param(parent, "num_classes", "5")
    child = client.create_run(exp, run_name="FGSM", tags={"mlflow.parentRunId": parent,
                                                          "mlattack.attack_name": "FGSM"}).info.run_id  # fmt: skip
    for k, v in {"network": "old", "dataset": "toy", "avg_labels": "1.5", "num_samples": "4"}.items():
        client.log_param(child, k, v)
    old = {**{f"success_rate_n{k}": 1 - k / 8 for k in range(8)}, "l2_mean": 0.25, "num_samples": 4.0,
           "labels_shown_mean": 3.5, "l2_mean_success_n0": 0.3}  # fmt: skip
    for k, v in old.items():
        client.log_metric(child, k, v)
    client.set_terminated(child)
    (run,) = collect_runs(client, "old-attacks")
    assert run.success == pytest.approx([1 - k / 8 for k in range(8)]) and run.num_classes == 5
    assert success_table([run]).loc["FGSM", "n=1"] == pytest.approx(87.5)
    assert norms_table([run]).loc["FGSM", "L2 (all)"] == 0.25
    assert norms_table([run]).loc["FGSM", "L2 (succ. n=0)"] == 0.3


def test_cost_table_and_success_vs_cost_plot(populated_store, report):
    _, attack_reports, _ = populated_store
    tables, figures = report.output_dir / "tables", report.output_dir / "figures"
    cost = pd.read_csv(tables / "cost_linearcolournet_toy.csv", index_col="attack")
    # paper mode: one forward and one backward pass per gradient step, judging not counted
    assert cost.loc["FGSM", "fwd/sample"] == cost.loc["FGSM", "bwd/sample"] == 1.0
    assert cost.loc["BIM", "fwd/sample"] == cost.loc["MIFGSM", "bwd/sample"] == 4.0
    # the sweep's points are drawn, not tabulated (a grid would bury the attacks)
    assert not any("[" in name for name in cost.index)
    assert "3 sweep and grid points are in the figure" in report.markdown["cost_linearcolournet_toy"]
    metrics = attack_reports["linearcolournet"].metrics
    for attack in cost.index:
        m = metrics[attack]
        assert cost.loc[attack, "ms/sample"] == pytest.approx(1000 * m["seconds_per_sample"])
    assert not {"labels shown", "n=0"} & set(cost.columns)  # in the success table, printed once
    assert "fwd/sample" in report.markdown["cost_linearcolournet_toy"]
    index = (report.output_dir / "index.md").read_text()
    assert "### Cost" in index and "figures/cost_linearcolournet_toy.png" in index
    with Image.open(figures / "cost_shiftedcolournet_toy.png") as img:
        assert img.size[0] > 600 and img.size[1] > 300
        assert np.asarray(img.convert("L")).std() > 10  # not a blank canvas


def test_latest_only_prefers_paper_mode_and_never_mixes_modes_silently(tmp_path):
    """A fast run started after a paper run of the same attack does not replace it in the study's tables; without
    a paper run the fast one is reported; runs.csv says the mode of every row."""
    from mlattack.report.collect import collect_runs, runs_frame

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'modes.db'}")
    exp = client.create_experiment("modes")

    def child(attack: str, mode: str, rate: float) -> str:
        parent = client.create_run(exp).info.run_id
        run = client.create_run(exp, run_name=attack, tags={"mlflow.parentRunId": parent,
                                                            "mlattack.attack_name": attack}).info.run_id  # fmt: skip
        params = {"network": "net", "dataset": "toy", "avg_labels": "1.5", "num_samples": "4", "mode": mode}
        for k, v in {**params, **({"fast_network": "exact"} if mode == "fast" else {})}.items():
            client.log_param(run, k, v)
        client.log_metric(run, "success_rate_n0", rate)
        client.set_terminated(run)
        return run

    paper_bim = child("BIM", "paper", 0.5)
    child("BIM", "fast", 0.9)  # later, same attack: not the one to quote
    fast_pgd = child("PGD", "fast", 0.7)  # no paper run of PGD
    runs = {r.attack: r for r in collect_runs(client, "modes")}
    assert runs["BIM"].run_id == paper_bim and runs["PGD"].run_id == fast_pgd
    frame = runs_frame(list(runs.values())).set_index("attack")
    assert frame.loc["BIM", "mode"] == "paper" and frame.loc["PGD", "mode"] == "fast"
    assert frame.loc["PGD", "fast_network"] == "exact"
    fast_only = collect_runs(client, "modes", filter_string="params.mode = 'fast'")
    assert {r.attack: r.metrics["success_rate_n0"] for r in fast_only} == {"BIM": 0.9, "PGD": 0.7}


def test_report_html_is_written_logged_and_self_contained(populated_store, report):
    uri = populated_store[0]
    page = (report.output_dir / "report.html").read_text()
    links = Links()  # every src/href of the page
    links.feed(page)
    figures = [f for f in report.files if f.suffix == ".png"]
    assert links.tags.count("img") == len(figures) > 0
    assert all(t.startswith("data:") for t in links.targets)
    assert "## " not in page and "![" not in page  # no Markdown left as literal text
    logged = {a.path for a in mlflow.MlflowClient(uri).list_artifacts(report.run_id)}
    assert "report.html" in logged


def test_latest_only_warns_when_two_registered_models_share_a_victim_name(tmp_path):
    """Two registered models whose names do not follow ``<class>-<variant>-<dataset>`` both report as the class;
    the older one's runs are then dropped per attack: the report says so instead of dropping them silently."""
    from mlattack.report.collect import collect_runs

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'names.db'}")
    exp = client.create_experiment("names")

    def child(identity: str) -> str:
        parent = client.create_run(exp).info.run_id
        run = client.create_run(exp, run_name="PGD", tags={"mlflow.parentRunId": parent,
                                                           "mlattack.attack_name": "PGD"}).info.run_id  # fmt: skip
        params = {"network": "query2label", "dataset": "synthetic", "avg_labels": "1.5", "num_samples": "4",
                  "model_identity": identity, "model_uri": f"models:/{identity}"}  # fmt: skip
        for k, v in params.items():
            client.log_param(run, k, v)
        client.log_metric(run, "success_rate_n0", 0.5)
        client.set_terminated(run)
        return run

    child("query2label-synthetic-demo64/1")
    child(
        "query2label-synthetic-demo64/2"
    )  # a re-fit of the same registered model: the newer one, no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(collect_runs(client, "names")) == 1
    child("query2label-at-synthetic-demo64/1")
    with pytest.warns(UserWarning, match="query2label-synthetic-demo64.*query2label-at-synthetic-demo64"):
        (run,) = collect_runs(client, "names")
    assert run.params["model_identity"] == "query2label-at-synthetic-demo64/1"
