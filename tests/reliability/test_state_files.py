"""What a crash can leave in an attack run's files, and that the next run repairs it to the uninterrupted result:
an empty or torn panel preview, record lines that are torn, not UTF-8, or valid JSON with fields missing or of the
wrong type, a damaged selection cache. Writes themselves are atomic (temp file + fsync + rename)."""

from __future__ import annotations

import json

import mlflow
import pytest
import torch

from mlattack.rundir import atomic
from mlattack.rundir.records import parse_record, read_panel, read_records
from tests.evaluation.test_runner import CrashAtBatch
from tests.reliability.helpers import computed
from tests.reliability.jobs import ATTACKS, run_toy_attack


def strip(records: list[dict]) -> list[dict]:
    return [computed(r) for r in sorted(records, key=lambda r: r["position"])]


@pytest.fixture
def crashed_and_reference(tmp_path, store, toy_source, registered_toy_model):
    """An uninterrupted run, and the same run crashed after its third batch (records and previews on disk)."""
    reference = run_toy_attack(registered_toy_model, tmp_path / "ref", experiment="reference")
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_toy_attack(registered_toy_model, out, [CrashAtBatch(3)])
    (run_dir,) = [p for p in out.iterdir() if p.name != "selections"]
    (ref_dir,) = [p for p in (tmp_path / "ref").iterdir() if p.name != "selections"]
    return registered_toy_model, out, run_dir, ref_dir, reference


def test_damaged_previews_and_record_lines_are_redone_to_the_uninterrupted_result(
    crashed_and_reference, caplog, store
):
    model, out, run_dir, ref_dir, reference = crashed_and_reference
    fgsm, pgd, bim = (run_dir / f"{name}.jsonl" for name, _ in ATTACKS)
    # what kill -9 and bad disks leave: an empty preview (the old non-atomic rewrite), a torn one, and records ...
    (run_dir / "FGSM.panel.pt").write_bytes(b"")
    panel = (run_dir / "PGD.panel.pt").read_bytes()
    (run_dir / "PGD.panel.pt").write_bytes(panel[: len(panel) // 2])
    lines = fgsm.read_bytes().split(b"\n")
    lines[0] = b'{"position": 0, "labels_shown": 3, "note": "\xff\xfe not UTF-8"}'
    rec = json.loads(lines[1])
    del rec["labels_shown"]  # valid JSON, a field missing
    lines[1] = json.dumps(rec).encode()
    rec = json.loads(lines[2])
    rec["valid"] = "yes"  # valid JSON, a field of the wrong type
    lines[2] = json.dumps(rec).encode()
    fgsm.write_bytes(b"\n".join(lines))
    with open(pgd, "ab") as f:
        f.write(b'{"position": 6, "index": 9, "labels_sh')  # torn mid-line by a kill
    bim.write_bytes(bim.read_bytes() + b"\x00\x00garbage\n")

    resumed = run_toy_attack(model, out)
    assert resumed.resumed and resumed.table == reference.table
    assert "damaged record line(s) dropped" in caplog.text and "is unreadable" in caplog.text
    for name, _ in ATTACKS:
        records, damaged = read_records(run_dir / f"{name}.jsonl")
        assert sorted(r["position"] for r in records) == list(range(len(records)))  # each sample once
        assert strip(records) == strip(read_records(ref_dir / f"{name}.jsonl")[0]), name
        got, want = read_panel(run_dir / f"{name}.panel.pt"), read_panel(ref_dir / f"{name}.panel.pt")
        assert sorted(got) == sorted(want) == [0, 1, 2, 3]
        assert all(torch.equal(got[p]["adv"], want[p]["adv"]) for p in got)
        for key in ("success_rate_n0", "success_rate_n3", "labels_shown_mean", "l2_mean", "num_samples"):
            assert resumed.metrics[name][key] == pytest.approx(reference.metrics[name][key]), (name, key)
    client = mlflow.MlflowClient(
        store
    )  # this test's store, whatever an earlier test left as MLflow's default
    assert client.get_run(resumed.parent_run_id).info.status == "FINISHED"


@pytest.mark.parametrize(
    "line",
    [b"\xff\xfe", b"[1, 2]", b'{"position": 1}', b'{"position": -1}', b"NaN", b'{"position": 1.5}'],
    ids=["not-utf8", "not-an-object", "fields-missing", "negative-position", "bare-nan", "float-position"],
)
def test_a_damaged_record_line_is_no_record(line):
    assert parse_record(line) is None


def test_selection_cache_damaged_in_any_way_is_selected_again(tmp_path, caplog):
    from mlattack.evaluation.selection import cached_selection, select_correct_samples
    from tests.evaluation.toy import LinearColourNet, ToyColours

    dataset = ToyColours(n=12)
    good = select_correct_samples(LinearColourNet(), dataset, 5)
    assert len(set(good.indices)) == 5 and good.ids == [dataset.ids[i] for i in good.indices]
    calls = []

    def compute():
        calls.append(1)
        return good

    def stored(**change) -> bytes:
        return json.dumps({"key": "k", **{**good.__dict__, **change}}).encode()

    first, ids = good.indices[0], good.ids
    damaged = {
        "empty": b"",
        "not UTF-8": b"\xff\xfe{",
        "fields missing": b'{"indices": [0]}',
        "another key": json.dumps({**good.__dict__, "key": "other"}).encode(),
        "past the split": stored(indices=[*good.indices[:-1], 99]),
        # valid JSON of the right key that names one sample 5 times (it was attacked 5 times, reported as N = 5)
        "one sample repeated": stored(indices=[first] * 5, ids=[ids[0]] * 5),
        "out of order": stored(indices=good.indices[::-1], ids=ids[::-1]),
        "ids not the rows'": stored(ids=[*ids[1:], ids[0]]),
        "ids not in the split": stored(ids=[f"x{i}" for i in range(5)]),
        "too few, split not read to its end": stored(indices=good.indices[:4], ids=ids[:4]),
        "another N": stored(requested=7),
        "wrong avgLabels": stored(avg_labels=good.avg_labels + 1),
    }
    path = tmp_path / "selection-k.json"
    for what, damage in damaged.items():
        path.write_bytes(damage)
        assert cached_selection(tmp_path, "k", compute, dataset, 5) == good, what
    assert len(calls) == len(damaged) and "damaged or stale" in caplog.text
    assert cached_selection(tmp_path, "k", compute, dataset, 5) == good and len(calls) == len(
        damaged
    )  # now good
    everything = select_correct_samples(
        LinearColourNet(), dataset, 50
    )  # fewer than asked: the whole split read
    path.write_text(json.dumps({"key": "k", **everything.__dict__}))
    assert cached_selection(tmp_path, "k", compute, dataset, 50) == everything and len(calls) == len(damaged)


def test_an_interrupted_rewrite_leaves_the_old_file_and_a_torn_append_a_fresh_line(tmp_path, monkeypatch):
    target = tmp_path / "state.bin"
    atomic.write_atomic(target, b"old content")

    def interrupted(f, data):
        f.write(data[:3])
        raise KeyboardInterrupt  # stands in for the kill: nothing after this point runs

    monkeypatch.setattr(atomic, "_write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic.write_atomic(target, b"new content")
    assert target.read_bytes() == b"old content"
    assert not list(tmp_path.glob(".*.tmp"))
    monkeypatch.undo()
    log = tmp_path / "records.jsonl"
    log.write_bytes(b'{"a": 1}\n{"b": ')  # a line cut by a kill
    atomic.append_lines(log, ['{"c": 3}'])
    assert log.read_bytes() == b'{"a": 1}\n{"b": \n{"c": 3}\n'
