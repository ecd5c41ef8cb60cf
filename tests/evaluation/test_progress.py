"""The attack pass shows one progress bar per attack on a terminal and one summary line per attack elsewhere."""

import io
import re

import pytest
from rich.console import Console

from mlattack.attacks import FGSM, PGD
from mlattack.evaluation.batches import attack_pass
from mlattack.evaluation.job import AttackJob
from mlattack.evaluation.progress import AttackProgress, interactive, rate_text
from mlattack.evaluation.selection import Selection
from mlattack.evaluation.settings import AttackSettings
from mlattack.rundir.records import RunFolder
from tests.evaluation.toy import LinearColourNet

SELECTED = [0, 4, 5, 6, 7, 8, 9]


def jobs(run_dir):
    return [
        AttackJob("FGSM", FGSM(eps=0.3), 2.0, RunFolder(run_dir, "FGSM", 7, figure_positions=())),
        AttackJob(
            "PGD-small", PGD(eps=0.2, nb_iter=3, eps_iter=0.05), 2.0, RunFolder(run_dir, "PGD-small", 4, ())
        ),
    ]


def attack(toy_data, run_dir, progress_bar=False, callbacks=None, batch_size=3):
    todo = jobs(run_dir)
    selection = Selection(SELECTED, [f"img{i:03d}" for i in SELECTED], 2.0, len(SELECTED), 10)
    settings = AttackSettings(num_samples=7, batch_size=batch_size, quantize="none", accelerator="cpu")
    callbacks = [make(todo) for make in callbacks or []]
    attack_pass(LinearColourNet(), todo, selection, toy_data.dataset("test"), toy_data, settings, progress_bar,
                callbacks)  # fmt: skip
    return todo, callbacks


def test_a_terminal_shows_one_bar_per_attack_with_counts_rate_and_eta(tmp_path, toy_data):
    console = Console(record=True, force_terminal=True, width=120)
    _, (progress,) = attack(toy_data, tmp_path, callbacks=[lambda j: AttackProgress(j, console, live=True)])
    screen = console.export_text()  # every frame drawn, in order
    assert re.search(r"FGSM\s+━+ 0/7 .*PGD-small ━+ 0/4", screen, re.S)  # the first frame: both bars, empty
    done = r"✓ {} +━+ {} [\d.]+ (samples/s|s/sample) ETA 0:00:00"
    assert re.search(done.format("FGSM", "7/7") + r"\s+" + done.format("PGD-small", "4/4") + r"\s*$", screen)
    assert "Testing" not in screen  # Lightning's own batch counter is off


def test_a_pipe_gets_one_line_per_attack_at_the_end(tmp_path, toy_data, capsys):
    attack(toy_data, tmp_path, progress_bar=True)
    out = capsys.readouterr().out.strip().splitlines()
    assert [line.split(":")[0] for line in out] == ["FGSM", "PGD-small"]
    assert out[0].startswith("FGSM: 7/7 samples in ") and out[1].startswith("PGD-small: 4/4 samples in ")


def test_a_resumed_pass_counts_the_samples_on_file(tmp_path, toy_data):
    attack(toy_data, tmp_path, batch_size=7)
    console = Console(file=io.StringIO(), width=200)
    attack(toy_data, tmp_path, batch_size=7, callbacks=[lambda j: AttackProgress(j, console)])
    lines = console.file.getvalue().splitlines()
    assert lines == ["FGSM: 7/7 samples in 0.0 s, 7 on file from an earlier run",
                     "PGD-small: 4/4 samples in 0.0 s, 4 on file from an earlier run"]  # fmt: skip


def test_no_live_bars_in_ci_or_a_file(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    assert not interactive(Console(file=io.StringIO()))
    assert interactive(Console(force_terminal=True))
    monkeypatch.setenv("CI", "true")
    assert not interactive(Console(force_terminal=True))


@pytest.mark.parametrize(("samples", "seconds", "text"), [(10, 4.0, "2.50 samples/s"), (2, 9.0, "4.5 s/sample"),
                                                          (0, 1.0, "")])  # fmt: skip
def test_rate_reads_as_samples_per_second_or_seconds_per_sample(samples, seconds, text):
    assert rate_text(samples, seconds) == text


def test_the_bar_moves_inside_one_attack_call_and_an_eta_comes_from_the_first_passes(
    tmp_path, toy_data, monkeypatch
):
    """One batch of all 7 samples: without in-call ticks the bar would sit at 0 until the call ends."""
    import mlattack.evaluation.progress as progress

    monkeypatch.setattr(progress, "REDRAW", 0.0)
    seen: list[tuple[str, float, float | None]] = []

    class Watching(AttackProgress):
        def attack_step(self, job, samples):
            super().attack_step(job, samples)
            seen.append((job.name, self.progress_of(job), self.eta(job)))

    console = Console(file=io.StringIO(), force_terminal=True, width=120)
    attack(toy_data, tmp_path, batch_size=7, callbacks=[lambda j: Watching(j, console, live=True)])
    pgd = [(p, eta) for name, p, eta in seen if name == "PGD-small"]
    assert progress.step_budget(PGD(eps=0.2, nb_iter=3, eps_iter=0.05)) == 3
    assert len(pgd) >= 3  # one tick per forward pass of the 3-step attack
    shares = [p for p, _ in pgd]
    assert shares == sorted(shares) and 0 < shares[0] < shares[-1] < 4  # moves, and stops short of the record
    assert pgd[0][1] is not None and pgd[0][1] > 0  # an ETA from the first pass
