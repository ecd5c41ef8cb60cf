"""Per-sample records and panel previews read back after a crash (mlattack.rundir.records), and how a resumed
rank takes them up (AttackCallback.setup)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import torch

from mlattack.attacks import FGSM
from mlattack.evaluation.callback import AttackCallback
from mlattack.evaluation.job import AttackJob
from mlattack.evaluation.settings import AttackSettings
from mlattack.rundir.records import NORMS, RunFolder, read_panel


def record(position: int, shown: int = 2) -> dict:
    rec = {"position": position, "index": position + 10, "sample_id": f"s{position}", "true_labels": ["a"],
           "labels_shown_names": ["a", "b"][:shown], "num_true": 1, "labels_shown": shown, "iterations": 3,
           "reached": False, "loss": 0.5, "seconds": 0.01, "valid": True, "failure": ""}  # fmt: skip
    return {**rec, **{n: 0.1 for n in NORMS}}


def test_records_of_every_rank_once_each_within_the_job(tmp_path):
    folder = RunFolder(tmp_path, "FGSM", num_samples=6)
    (tmp_path / "FGSM.jsonl").write_text("\n".join(json.dumps(record(p)) for p in (0, 1, 4, 9)) + "\n")
    (tmp_path / "FGSM.rank1.jsonl").write_text(
        json.dumps(record(2)) + "\n" + json.dumps(record(1, shown=1)) + "\n"
    )
    records = folder.load_records()
    assert [r["position"] for r in records] == [0, 1, 2, 4]  # position 9 is beyond this job's 6 samples
    assert records[1]["labels_shown"] == 2  # the first record of a position counts


def test_a_resumed_rank_skips_every_stored_sample_and_counts_only_its_share(tmp_path):
    """Under DDP a rank's batch (a group of consecutive positions) holds positions of every residue: all stored
    samples are done for every rank, and each stored sample is counted by exactly one rank."""
    (tmp_path / "FGSM.jsonl").write_text("\n".join(json.dumps(record(p)) for p in range(5)) + "\n")
    counted = 0
    for rank in (0, 1):
        job = AttackJob("FGSM", FGSM(), avg_labels=1.0, folder=RunFolder(tmp_path, "FGSM", num_samples=10))
        callback = AttackCallback([job], 2, ["a", "b"], AttackSettings(quantize="none"))
        callback.setup(SimpleNamespace(global_rank=rank, world_size=2, callbacks=[]), None, "test")
        assert job.folder.done == {0, 1, 2, 3, 4}
        counted += int(job.metric.count)
    assert counted == 5


def test_an_unreadable_preview_is_empty_and_a_good_one_keeps_only_whole_entries(tmp_path, caplog):
    path = tmp_path / "FGSM.panel.pt"
    for damage in (b"", b"PK\x03\x04 torn", b"\x80\x02 not a panel"):
        path.write_bytes(damage)
        assert read_panel(path) == {}
    assert "is unreadable" in caplog.text
    entry = {"clean": torch.zeros(3, 2, 2), "adv": torch.ones(3, 2, 2), "before": ["a"], "after": ["a", "b"]}
    torch.save({0: entry, 1: {"clean": torch.zeros(3, 2, 2)}, "x": entry}, path)
    assert list(read_panel(path)) == [0]
