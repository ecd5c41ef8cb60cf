"""What an attack run shows while it works: one rich progress bar per attack (name, samples done/total, rate,
ETA) on a terminal, and one summary line per attack at the end anywhere else (a pipe, a file, CI logs), so logs
hold no redraw noise.

:class:`AttackProgress` is a Lightning callback that replaces Lightning's own "Testing" bar, which counts batches of
all attacks together and names none. The attack loop tells every callback that is an
:class:`AttackListener` when an attack starts and finishes its share of a batch; how many samples an attack has done is read from its ``job.folder.done`` (the recorded
positions), so the count is right whatever order the loop attacks samples in, and after a resume.

Inside one attack call (a batch of 10 samples under ML-CW can take minutes on a CPU) the bar moves with every
forward pass of the attacked network (``attack_step``), by the share of the attack's step budget spent
(:func:`step_budget`), up to just short of the batch's end, which only the recorded samples mark; the ETA follows
from the first passes. The budget is an upper bound (attacks that stop early spend less), so the first ETA errs
long, and it settles as samples are recorded.
"""

from __future__ import annotations

import os
import time
from typing import Protocol, runtime_checkable

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

from mlattack.evaluation.job import AttackJob


@runtime_checkable
class AttackListener(Protocol):
    """What the attack loop reports to the trainer's callbacks that have these methods: an attack starts, or has
    finished (and recorded) its part of a batch."""

    def attack_starting(self, job: AttackJob) -> None: ...

    def attack_done(self, job: AttackJob) -> None: ...


def step_budget(attack: object) -> int:
    """Forward passes one attack call makes at most, per batch: its iterations times its binary-search steps and
    restarts (1 for a one-step attack)."""
    iters = next((v for a in ("max_iter", "nb_iter") if isinstance(v := getattr(attack, a, None), int)), 1)
    outer = getattr(attack, "binary_search_steps", 1) * getattr(attack, "n_restarts", 1)
    return max(int(iters) * max(int(outer), 1), 1)


#: seconds between two redraws from inside an attack call
REDRAW = 0.5
#: the share of a batch the bar may show before the batch's samples are recorded
WITHIN_BATCH = 0.99


def interactive(console: Console) -> bool:
    """Live bars only on a real terminal: not in a pipe or file, a dumb terminal, or CI (where FORCE_COLOR may make
    rich believe it writes to one)."""
    return console.is_terminal and not console.is_dumb_terminal and not os.environ.get("CI")


def rate_text(samples: int, seconds: float) -> str:
    """Samples per second of the attack's own time; "s/sample" below one, as slow attacks on a CPU are."""
    if samples <= 0 or seconds <= 0:
        return ""
    rate = samples / seconds
    return f"{rate:.2f} samples/s" if rate >= 1 else f"{seconds / samples:.1f} s/sample"


def clock(seconds: float | None) -> str:
    if seconds is None:
        return "-:--:--"
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class AttackProgress(Callback):
    """One bar per attack on rank 0 (see module docstring); ``console`` defaults to stdout, ``live`` to whether
    that is an interactive terminal."""

    def __init__(
        self, jobs: list[AttackJob], console: Console | None = None, live: bool | None = None
    ) -> None:
        self.jobs = jobs
        self.console = console or Console()
        self.live = interactive(self.console) if live is None else live
        self.progress: Progress | None = None
        self.tasks: dict[str, TaskID] = {}
        self.totals: dict[str, set[int]] = {}  # the positions of each attack this process attacks
        self.seconds: dict[str, float] = {}  # time spent in each attack in this pass
        self.resumed: dict[str, int] = {}  # samples already on file when the pass started
        self.started: dict[str, float] = {}
        self.steps: dict[str, tuple[int, int]] = {}  # passes so far in the running call, and its samples
        self.shown = 0.0
        self.begin = 0.0
        self.enabled = False

    # -- Lightning hooks ------------------------------------------------------------------------------------------
    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.enabled = trainer.is_global_zero  # under DDP, rank 0 shows its share of the samples
        if not self.enabled:
            return
        loader = trainer.test_dataloaders
        positions = list(loader.sampler) if loader is not None else []
        self.begin = time.perf_counter()
        for job in self.jobs:
            self.totals[job.name] = {p for p in positions if p < job.num_samples}
            self.resumed[job.name] = self._done(job)
            self.seconds[job.name] = 0.0
        if self.live:
            self.progress = Progress(
                TextColumn("{task.fields[mark]}"),
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TextColumn("ETA {task.fields[eta]}"),
                console=self.console,
            )
            width = max(len(job.name) for job in self.jobs)
            for job in self.jobs:
                total, done = len(self.totals[job.name]), self.resumed[job.name]
                self.tasks[job.name] = self.progress.add_task(
                    job.name.ljust(width), total=total, completed=done, mark="✓" if done >= total else " ",
                    rate="", eta="-:--:--",
                )  # fmt: skip
            self.progress.start()

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        for job in self.jobs:  # the ETAs move here, once every attack has had its turn on the batch
            self._update(job, estimate=True)

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.enabled:
            return
        self._stop()
        if not self.live:
            for job in self.jobs:
                self.console.print(self.summary(job), highlight=False, soft_wrap=True)

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self._stop()  # give the terminal back before the error is printed

    # -- AttackListener -------------------------------------------------------------------------------------------
    def attack_starting(self, job: AttackJob) -> None:
        if self.enabled:
            self.started[job.name] = time.perf_counter()
            self._update(job, running=True)

    def attack_step(self, job: AttackJob, samples: int) -> None:
        """One forward pass of the attacked network inside ``job``'s call on ``samples`` samples."""
        if not self.enabled or job.name not in self.started:
            return
        passes = self.steps.get(job.name, (0, samples))[0] + 1
        self.steps[job.name] = (passes, samples)
        now = time.perf_counter()
        if now - self.shown >= REDRAW:
            self.shown = now
            self._update(job, running=True, estimate=True)

    def attack_done(self, job: AttackJob) -> None:
        if self.enabled and job.name in self.started:
            self.seconds[job.name] += time.perf_counter() - self.started.pop(job.name)
            self.steps.pop(job.name, None)
            self._update(job)

    # -- what is shown --------------------------------------------------------------------------------------------
    def _done(self, job: AttackJob) -> int:
        return len(self.totals[job.name] & job.folder.done)

    def progress_of(self, job: AttackJob) -> float:
        """Samples done, plus the running call's share of its step budget (see module docstring)."""
        passes, samples = self.steps.get(job.name, (0, 0))
        share = min(passes / step_budget(job.attack), WITHIN_BATCH) if passes else 0.0
        return self._done(job) + share * samples

    def eta(self, job: AttackJob) -> float | None:
        """Wall-clock time left for this attack at its pace so far in this pass, the other attacks' turns included
        (the loop interleaves them); read at the end of a batch, when every attack has had its turn."""
        done, total = self.progress_of(job), len(self.totals[job.name])
        new, elapsed = done - self.resumed[job.name], time.perf_counter() - self.begin
        if done >= total:
            return 0.0
        return (total - done) * elapsed / new if new > 0 else None

    def summary(self, job: AttackJob) -> str:
        done, total = self._done(job), len(self.totals[job.name])
        new, seconds = done - self.resumed[job.name], self.seconds[job.name]
        resumed = f", {self.resumed[job.name]} on file from an earlier run" if self.resumed[job.name] else ""
        rate = rate_text(new, seconds)
        return (
            f"{job.name}: {done}/{total} samples in {seconds:.1f} s"
            + (f" ({rate})" if rate else "")
            + resumed
        )

    def _update(self, job: AttackJob, running: bool = False, estimate: bool = False) -> None:
        if self.progress is None or job.name not in self.tasks:
            return
        done, total = self._done(job), len(self.totals[job.name])
        mark = "▶" if running else "✓" if done >= total else " "
        rate = rate_text(done - self.resumed[job.name], self.seconds[job.name])
        fields = {"eta": clock(self.eta(job))} if estimate or done >= total else {}
        self.progress.update(
            self.tasks[job.name], completed=self.progress_of(job), mark=mark, rate=rate, **fields
        )

    def _stop(self) -> None:
        if self.progress is not None:
            for job in self.jobs:
                self._update(job)
            self.progress.stop()
            self.progress = None
