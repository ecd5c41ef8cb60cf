"""`mlattack attack --defence`: a preprocessing defence in front of a registered model, attacked plainly and
adaptively; the runs say so in their params, log the defended model's clean val mAP, get their own report rows,
and the robustness section tabulates them with intervals."""

from __future__ import annotations

import mlflow
import pytest

from mlattack.attacks import BIM
from mlattack.defences import BitDepth
from mlattack.evaluation.runner import AttackSpec, run_attacks
from mlattack.report.collect import collect_runs, load_samples
from mlattack.report.robustness import robustness_sections
from mlattack.tracking.record import CLEAN_MAP_METRIC
from mlattack.tracking.registry import log_network
from tests.evaluation.toy import Identity, NormColourNet


def attack(model, data, out, **kw):
    return run_attacks(model, data, [AttackSpec(attack=BIM(eps=0.5, nb_iter=5, eps_iter=0.15), name="PGD[eps=0.5]")],
                       num_samples=8, batch_size=4, quantize="none", output_dir=str(out), panel_samples=0,
                       progress_bar=False, accelerator="cpu", **kw)  # fmt: skip


def test_a_gradient_masking_defence_holds_against_the_plain_attack_and_falls_to_bpda(
    tmp_path, store, toy_data, registered_toy_model
):
    plain = attack(registered_toy_model, toy_data, tmp_path, defence=BitDepth(2))
    adaptive = attack(registered_toy_model, toy_data, tmp_path, defence=BitDepth(2), adaptive=True)
    bare = attack(registered_toy_model, toy_data, tmp_path)
    assert (
        len({plain.parent_run_id, adaptive.parent_run_id, bare.parent_run_id}) == 3
    )  # three runs, three keys
    shown = {k: r.metrics["PGD[eps=0.5]"]["labels_shown_mean"] for k, r in
             (("plain", plain), ("adaptive", adaptive), ("bare", bare))}  # fmt: skip
    # rounding's gradient is zero: the plain attack never moves, so every sample shows its clean labels
    assert shown["plain"] == pytest.approx(plain.avg_labels)
    assert shown["adaptive"] > shown["plain"]  # BPDA passes the network's gradient through the rounding
    client = mlflow.MlflowClient(store)
    params = client.get_run(adaptive.parent_run_id).data.params
    assert (
        params["defence"] == "BitDepth"
        and params["defence/bits"] == "2"
        and params["defence/adaptive"] == "True"
    )
    clean = client.get_run(plain.parent_run_id).data.metrics[CLEAN_MAP_METRIC]
    assert 0.5 < clean <= 1.0  # 2-bit colours still carry the toy's labels

    runs = collect_runs(client, "mlattack-attacks")
    names = {r.network for r in runs}
    assert names == {"linearcolournet", "linearcolournet+bitdepth2", "linearcolournet+bitdepth2+adaptive"}
    sections = robustness_sections(client, runs, tmp_path / "figures")
    (stem, _, _, shown_table, fig), (_, _, _, rates, _) = sections
    assert fig.is_file() and stem == "robustness_toy"
    row = shown_table.loc["linearcolournet+bitdepth2"]
    assert row["clean val mAP"] == f"{clean:.3f}" and row["N"] == 8
    assert row["PGD ε=0.5"].startswith(f"{shown['plain']:.2f} [")
    assert "%" in rates.loc["linearcolournet+bitdepth2+adaptive", "PGD ε=0.5"]
    # every victim's run logs its clean val mAP, the bare network's too (a .ckpt victim has no registered score)
    assert CLEAN_MAP_METRIC in client.get_run(bare.parent_run_id).data.metrics
    assert 0.5 < float(shown_table.loc["linearcolournet", "clean val mAP"]) <= 1.0


def test_bpda_through_an_identity_defence_records_what_the_plain_attack_records(tmp_path, store, toy_data):
    """The network has a BatchNorm (the identity in eval mode): were it left in train mode after an adaptive attack,
    judging would normalise by batch statistics and record other labels (the bug BPDA rows once had)."""
    client = mlflow.MlflowClient(store)
    run = client.create_run(client.create_experiment("models"))
    model = log_network(NormColourNet(), run.info.run_id, store, "normcolournet-toy", image_size=8)
    client.set_terminated(run.info.run_id)
    reports = {"bare": attack(model, toy_data, tmp_path), "plain": attack(model, toy_data, tmp_path, defence=Identity()),
               "bpda": attack(model, toy_data, tmp_path, defence=Identity(), adaptive=True)}  # fmt: skip
    runs = {r.network: r for r in collect_runs(client, "mlattack-attacks")}
    assert set(runs) == {"normcolournet", "normcolournet+identity", "normcolournet+identity+adaptive"}
    shown = {k: load_samples(client, r, tmp_path / "dl")["labels_shown"].tolist() for k, r in runs.items()}
    assert (
        shown["normcolournet"] == shown["normcolournet+identity"] == shown["normcolournet+identity+adaptive"]
    )
    measured = ("seconds_per_sample", "peak_memory_mb")  # what the runs cost, not what they found
    metrics = [
        {k: v for k, v in r.metrics["PGD[eps=0.5]"].items() if k not in measured} for r in reports.values()
    ]
    assert metrics[0] == metrics[1] == metrics[2]
    maps = {client.get_run(r.parent_run_id).data.metrics[CLEAN_MAP_METRIC] for r in reports.values()}
    assert len(maps) == 1  # the same victim, the same clean val mAP
