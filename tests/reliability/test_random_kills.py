"""Fault injection: ``kill -9`` an attack run at seeded random points, in the middle of record and preview writes
among them, resume it after every kill, and require the final records, metrics and table of an uninterrupted run.

Children come from a fork server that imported everything once (forked.py), so a dozen kills fit in about a
minute. Every attempt dies at the latest at a record write (a backstop cut), so no attempt finishes early and
each kill leaves real work to resume. A failure names the seed; set ``MLATTACK_KILL_SEED`` to replay another one.
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

import mlflow
import pytest
import torch

from mlattack.rundir.records import read_panel, read_records
from mlattack.tracking.registry import log_network
from tests.evaluation.toy import LinearColourNet
from tests.reliability import forked
from tests.reliability.helpers import computed, computed_metrics, keep_tracking_uri
from tests.reliability.jobs import ATTACK_KWARGS, ATTACKS, attack_job

SEED = int(os.environ.get("MLATTACK_KILL_SEED", "20261126"))
PAUSE = 0.1  # seconds per batch, so time kills land inside the attack loop too
FIT_PAUSE = 0.5  # seconds per training batch of a killed fit (three batches an epoch)
PATTERNS = {"selection": ".selection-*.tmp", "panel": ".*.panel.pt.*.tmp", "records": "*.jsonl"}
#: the kill plan: cuts at chosen writes and kills at random times; one more kill lands in the final logging
PLAN = [
    "selection",
    "panel",
    "records",
    "panel",
    "time",
    "records",
    "time",
    "records",
    "time",
    "records",
    "time",
]


@pytest.fixture
def toy_model(tmp_path, fresh_store):
    store = fresh_store(tmp_path / "store")
    client = mlflow.MlflowClient(store)
    run = client.create_run(client.create_experiment("models"))
    with keep_tracking_uri():
        model = log_network(LinearColourNet(), run.info.run_id, store, "linearcolournet-toy", image_size=8)
    return store, model


def intact(run_dir: Path, attack: str) -> list[dict]:
    path = run_dir / f"{attack}.jsonl"
    return read_records(path)[0] if path.is_file() else []


def remaining_writes(out: Path, num_selected: int) -> int:
    """Record writes still to come: (attack, batch) pairs with a sample lacking an intact record."""
    dirs = [p for p in out.iterdir() if p.is_dir() and p.name != "selections"] if out.is_dir() else []
    batch = ATTACK_KWARGS["batch_size"]
    left = 0
    for attack, _ in ATTACKS:
        done = {r["position"] for d in dirs for r in intact(d, attack)}
        left += sum(any(p not in done for p in range(g, min(g + batch, num_selected)))
                    for g in range(0, num_selected, batch))  # fmt: skip
    return left


def the_run(client: mlflow.MlflowClient, experiment: str):
    exp = client.get_experiment_by_name(experiment)
    (parent,) = client.search_runs([exp.experiment_id], filter_string="tags.`mlflow.parentRunId` IS NULL")
    children = client.search_runs(
        [exp.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    )
    return parent, {c.info.run_name: c for c in children}


def test_attack_killed_at_random_points_resumes_to_the_uninterrupted_result(tmp_path, toy_model):
    store, model = toy_model
    rng = random.Random(SEED)
    ref_notes = tmp_path / "reference-progress.jsonl"
    started = time.monotonic()
    child = forked.start(attack_job, store, model, str(tmp_path / "ref"), str(ref_notes), PAUSE, None, None,
                         "reference")  # fmt: skip
    assert forked.finish(child, 300) == 0
    notes = forked.progress_notes(ref_notes)
    startup = notes[0]["t"]
    per_batch = (notes[-2]["t"] - startup) / max(1, len(notes) - 2)
    client = mlflow.MlflowClient(store)
    ref_parent, ref_children = the_run(client, "reference")
    num_selected = int(ref_parent.data.params["num_selected"])

    out, cuts = tmp_path / "out", tmp_path / "cuts.jsonl"
    outcomes = []
    for i, kind in enumerate(PLAN):
        left = remaining_writes(out, num_selected) if i else len(ATTACKS) * -(-num_selected // 2)
        if left <= 1:
            break
        if kind == "time":  # a random moment, with a cut at a later record write as the backstop
            cut = {"pattern": PATTERNS["records"], "nth": min(4, left - 1), "fraction": rng.random()}
            delay = rng.uniform(0.2 * startup, startup + 1.5 * per_batch)
        else:
            nth = 1 if kind == "selection" else rng.randint(1, 2)
            cut, delay = {"pattern": PATTERNS[kind], "nth": nth, "fraction": rng.random()}, None
        progress = tmp_path / f"progress-{i}.jsonl"
        child = forked.start(
            attack_job, store, model, str(out), str(progress), PAUSE, {**cut, "log": str(cuts)}
        )
        if delay is None:
            code = forked.finish(child, 300)
        else:
            forked.kill_after(child, delay)
            code = child.exitcode
        outcomes.append((kind, code))
    # one more kill once the attacks are done, while the results are being logged to MLflow
    progress = tmp_path / "progress-logging.jsonl"
    child = forked.start(attack_job, store, model, str(out), str(progress), PAUSE)
    while child.is_alive() and not any(n["what"] == "end" for n in forked.progress_notes(progress)):
        time.sleep(0.02)
    forked.kill_after(child, rng.uniform(0.0, 0.3))
    outcomes.append(("logging", child.exitcode))
    end = time.monotonic()
    final = forked.start(attack_job, store, model, str(out), str(tmp_path / "progress-final.jsonl"), 0.0)
    assert forked.finish(final, 300) == 0, outcomes

    kills = [kind for kind, code in outcomes if code == -9]
    fired = [json.loads(line)["file"] for line in cuts.read_text().splitlines()] if cuts.is_file() else []
    summary = (f"seed {SEED}: {len(kills)} kills {outcomes}; cut writes: {fired}; "
               f"{end - started:.0f} s until the final resume")  # fmt: skip
    print(summary)
    assert len(kills) >= 10, summary
    assert sum(f.endswith(".jsonl") for f in fired) >= 2 and sum(".panel.pt" in f for f in fired) >= 1, (
        summary
    )
    assert outcomes[-1] == ("logging", -9), summary

    # the result equals the uninterrupted run's: per-sample records, metrics (each logged once) and the table
    parent, children = the_run(client, "mlattack-attacks")
    assert parent.info.status == "FINISHED" and sorted(children) == sorted(ref_children)
    (run_dir,) = [p for p in out.iterdir() if p.is_dir() and p.name != "selections"]
    (ref_dir,) = [p for p in (tmp_path / "ref").iterdir() if p.is_dir() and p.name != "selections"]
    assert run_dir.name == ref_dir.name  # same run key
    damaged = 0
    for attack, _ in ATTACKS:
        records, bad = read_records(run_dir / f"{attack}.jsonl")
        damaged += bad
        assert sorted(r["position"] for r in records) == list(range(num_selected)), (
            attack
        )  # each once, none lost
        strip = [computed(r) for r in sorted(records, key=lambda r: r["position"])]
        ref = [computed(r) for r in intact(ref_dir, attack)]
        assert strip == ref, attack
        got, want = children[attack].data.metrics, ref_children[attack].data.metrics
        assert computed_metrics(got) == computed_metrics(want), attack
        history = client.get_metric_history(children[attack].info.run_id, "curve/success_vs_n")
        assert sorted(m.step for m in history) == list(range(8)), attack  # logged once despite the kill
        assert children[attack].info.status == "FINISHED"
        panel, ref_panel = (
            read_panel(run_dir / f"{attack}.panel.pt"),
            read_panel(ref_dir / f"{attack}.panel.pt"),
        )
        assert sorted(panel) == sorted(ref_panel) == [0, 1, 2, 3], (
            attack
        )  # previews redone after the cut writes
        assert all(torch.equal(panel[p]["adv"], ref_panel[p]["adv"]) for p in panel), attack
    tables = [
        mlflow.artifacts.load_text(f"{r.info.artifact_uri}/success_table.md") for r in (parent, ref_parent)
    ]
    assert tables[0] == tables[1]
    assert not list(run_dir.glob(".*.tmp"))  # what killed writers left was cleaned up by the next writer
    print(f"lost: nothing; {damaged} torn record line(s) dropped and their samples attacked again")


def last_checkpoint(out: Path, min_epoch: int):
    """``last.ckpt`` once it holds epoch ``min_epoch`` or later (and reads back whole), else None."""
    for path in out.rglob("last.ckpt"):
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # being replaced
            return None
        return path if ckpt["epoch"] >= min_epoch else None
    return None


def test_fit_killed_at_random_points_and_while_registering_resumes_and_registers_once(tmp_path, fresh_store):
    from mlattack.tracking.checkpoints import read_checkpoint
    from mlattack.tracking.registry import DIGEST_TAG, SCORE_TAG, load_network, weights_digest
    from tests.reliability.jobs import fit_args, fit_job

    rng = random.Random(SEED + 1)
    epochs = 3
    ref_store, store = fresh_store(tmp_path / "ref-store"), fresh_store(tmp_path / "store")
    assert forked.finish(forked.start(fit_job, ref_store, fit_args(tmp_path / "ref", epochs)), 600) == 0

    out, outcomes = tmp_path / "out", []
    resume: tuple[str, ...] = ()
    # two kills at random moments of the epoch after a checkpoint: its three training batches are paced
    # (FIT_PAUSE s each), so a kill within 3 * FIT_PAUSE s lands inside it on a machine of any speed (a delay
    # drawn from the whole fit's time per epoch let the resumed fit finish first on a loaded machine: no kill)
    for min_epoch in (0, 1):
        child = forked.start(fit_job, store, fit_args(out, epochs, resume), None, "promote", FIT_PAUSE)
        forked.wait_until(lambda e=min_epoch: last_checkpoint(out, e), child, 600, f"epoch {min_epoch} saved")
        forked.kill_after(child, rng.uniform(0.0, 3 * FIT_PAUSE))
        outcomes.append(("time", child.exitcode))
        resume = ("--ckpt_path", str(last_checkpoint(out, 0)))
    marker = tmp_path / "registering.json"  # the third kill: with its model version created, before any alias
    child = forked.start(fit_job, store, fit_args(out, epochs, resume), str(marker))
    outcomes.append(("registering", forked.finish(child, 600)))
    assert marker.is_file(), outcomes
    resume = ("--ckpt_path", str(last_checkpoint(out, epochs - 1)))
    assert forked.finish(forked.start(fit_job, store, fit_args(out, epochs, resume)), 600) == 0
    print(f"fit: {outcomes}")
    assert [code for _, code in outcomes].count(-9) >= 3, outcomes

    client = mlflow.MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("mlattack").experiment_id])
    assert run.info.status == "FINISHED"
    history = client.get_metric_history(run.info.run_id, "val/mAP")
    assert sorted(m.step for m in history) == sorted({m.step for m in history}) and len(history) == epochs
    assert len(client.get_metric_history(run.info.run_id, "best/val_mAP")) == 1
    versions = client.search_model_versions("name = 'mlgcn-synthetic'")
    assert [str(v.version) for v in versions] == [
        "1"
    ]  # registered once, though registration was killed midway
    best = client.get_model_version_by_alias("mlgcn-synthetic", "best")
    assert str(best.version) == "1" and best.run_id == run.info.run_id
    assert float(best.tags[SCORE_TAG]) == pytest.approx(run.data.metrics["best/val_mAP"])
    # the registered network is the best checkpoint's, bit for bit
    state = read_checkpoint(run.data.tags["best_checkpoint"])["state_dict"]
    with keep_tracking_uri():
        net = load_network("models:/mlgcn-synthetic@best", store)
    assert weights_digest(net) == best.tags[DIGEST_TAG]
    for k, v in net.state_dict().items():
        assert torch.equal(v, state[f"net.{k}"]), k
    # the uninterrupted fit: the same validation mAP every epoch and the same registered network, bit for bit
    ref_client = mlflow.MlflowClient(ref_store)
    ref_best = ref_client.get_model_version_by_alias("mlgcn-synthetic", "best")
    ref_history = ref_client.get_metric_history(ref_best.run_id, "val/mAP")
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == [
        m.value for m in sorted(ref_history, key=lambda m: m.step)
    ]
    assert best.tags[DIGEST_TAG] == ref_best.tags[DIGEST_TAG]
