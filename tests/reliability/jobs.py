"""What the forked children of the reliability tests run: a small attack run and a small fit (see forked.py)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from tests.reliability.forked import HoldAtFirstBatch, Progress, child_setup, cut_writes

#: three attacks, one of them randomised (PGD's random start is seeded per batch: a resume must redraw it equally)
ATTACKS = (
    ("FGSM", {"eps": 0.3}),
    ("PGD", {"eps": 0.2, "nb_iter": 5, "eps_iter": 0.05}),
    ("BIM", {"eps": 0.2, "nb_iter": 5, "eps_iter": 0.05}),
)
ATTACK_KWARGS = {"num_samples": 20, "batch_size": 2, "panel_samples": 4, "quantize": "floor"}


def toy_data():
    from mlattack.data.datamodule import MultiLabelDataModule

    return MultiLabelDataModule(source="toy", image_size=8, batch_size=4, num_workers=0)


def attack_specs():
    import mlattack.attacks as attacks
    from mlattack.evaluation.runner import AttackSpec

    return [AttackSpec(attack=getattr(attacks, name)(**args)) for name, args in ATTACKS]


def run_toy_attack(model: str, out: Path, callbacks=(), **kw):
    """The attack run every kill test repeats (in the calling process)."""
    from mlattack.evaluation.runner import run_attacks

    args = {**ATTACK_KWARGS, **kw}
    return run_attacks(model, toy_data(), attack_specs(), output_dir=str(out), progress_bar=False,
                       accelerator="cpu", callbacks=list(callbacks), **args)  # fmt: skip


def attack_job(store: str, model: str, out: str, progress: str | None = None, pause: float = 0.0,
               cut: dict | None = None, hold: str | None = None, experiment: str = "mlattack-attacks") -> None:  # fmt: skip
    """A child process: the toy attack run, optionally paced, cut mid-write, or held at its first batch."""
    child_setup(store)
    if cut:
        cut_writes(**cut)
    callbacks = []
    if progress:
        callbacks.append(Progress(Path(progress), pause))
    if hold:
        callbacks.append(HoldAtFirstBatch(Path(hold)))
    run_toy_attack(model, Path(out), callbacks, experiment=experiment)


def fit_args(out: Path, epochs: int, extra: tuple[str, ...] = ()) -> list[str]:
    from tests.reliability.helpers import tiny_fit_args

    return tiny_fit_args(out, epochs=epochs, extra=("--trainer.accelerator", "cpu", *extra))


#: where ``fit_job`` can ``kill -9`` itself while registering, in the order ``log_network`` reaches them
REGISTRATION_STEPS = ("log_model_artifacts", "log_outputs", "create_model_version", "promote")


def pace_training(pause: float) -> None:
    """Sleep ``pause`` seconds after each training batch of a fit (this process), so a kill or signal sent within
    an epoch's batches after a checkpoint lands inside the next epoch (sleeping changes no result)."""
    import time

    from mlattack.models.module import MultiLabelClassifier

    MultiLabelClassifier.on_train_batch_end = lambda *args, **kwargs: time.sleep(pause)


def fit_job(
    store: str,
    args: list[str],
    kill_at_registration: str | None = None,
    step: str = "promote",
    pause: float = 0.0,
) -> None:
    """A child process: ``mlattack fit``; optionally ``kill -9`` itself when registering reaches ``step`` (before
    that call): uploading the logged model's files, logging it as the run's output, creating the model version,
    or moving an alias (the version exists). ``kill_at_registration``: a file noting the kill. ``pause``: see
    :func:`pace_training`."""
    child_setup(store)
    if pause:
        pace_training(pause)
    if kill_at_registration:
        import mlflow

        from mlattack.tracking import registry

        def die(*args, **kwargs):
            Path(kill_at_registration).write_text(json.dumps({"step": step}))
            os.kill(os.getpid(), signal.SIGKILL)

        if step == "promote":
            registry.promote = die
        else:
            setattr(mlflow.MlflowClient, step, die)
    from mlattack.cli import main

    main(list(args))


def cli_job(store: str, args: list[str], log: str, pause: float = 0.0) -> None:
    """A child process: ``mlattack <args>`` through its entry point (exit status and all), stderr to ``log``;
    ``pause``: see :func:`pace_training`."""
    import sys

    child_setup(store)
    if pause:
        pace_training(pause)
    sys.stderr = open(log, "a", buffering=1)  # noqa: SIM115 - the child's stderr until it exits
    from mlattack.cli import main

    main(list(args))
