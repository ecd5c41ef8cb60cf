"""``mlattack study``: fit several victims on one dataset, register each, attack each with one attack config, then
draw the report (the architecture-vulnerability map when two or more networks were attacked).

Each stage is an ordinary ``mlattack`` command run in-process (``fit``, ``attack``, ``report``), so a study run is
exactly what the same commands typed by hand would record. The study only keeps the books:

- A fit is identified by its *fit key* (the fit config's text, the data config's text, the image size and the
  extra options); the finished fit run carries it as the tag ``mlattack.study.fit_key``, and a re-run that finds
  it reuses the version that run registered. A fit killed midway resumes from its ``last.ckpt`` (the checkpoints
  of a key live in ``<output_dir>/fits/<key>/``), into the same MLflow run.
- An attack stage is identified by the model version it attacks, the attack config's text, the data and N; its
  finished parent run carries ``mlattack.study.attack_key``. An unfinished one is resumed by ``mlattack attack``
  itself (same run key: no sample is attacked twice).

The registry name of a victim is ``<name>-<data source>`` (``mlgcn-effnet-synthetic``); the report labels its
network by that name, so variants of one class (random or pretrained trunk) get their own rows.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import yaml
from jsonargparse import ActionConfigFile, ArgumentParser, Namespace

from mlattack.resources import find_config
from mlattack.tracking.callbacks import mlflow_logger
from mlattack.tracking.registry import RegisterBestModel
from mlattack.tracking.store import EXPERIMENT, default_artifact_location, default_tracking_uri

FIT_KEY_TAG, ATTACK_KEY_TAG, STUDY_TAG = (
    "mlattack.study.fit_key",
    "mlattack.study.attack_key",
    "mlattack.study",
)
REGISTERED_TAG = "registered_model"  # set on a fit run by RegisterBestModel
#: runs one ``mlattack`` command line in this process and returns what it made (``mlattack.cli.run``)
Runner = Callable[[list[str]], Any]


@dataclass
class StudyModel:
    """One victim of the study.

    Args:
        name: its label; registered as ``<name>-<data source>`` (e.g. ``mlgcn-effnet``); start it with the
            network's class name in lower case (``mlgcn``, ``mlliw``, ``query2label``, ``vit``).
        config: the ``mlattack fit`` config (e.g. ``configs/demo-vit.yaml``).
        image_size: resolution of training and attack (``--data.image_size``); null = the data config's.
        fit_args: more ``mlattack fit`` options, e.g. ``{trainer.max_epochs: 6}`` (win over the study's).
        attack_args: more ``mlattack attack`` options for this victim, e.g. a preprocessing defence
            ``{defence: configs/defence/jpeg.yaml, adaptive: true}``; victims that differ only here share one fit.
    """

    name: str
    config: str
    image_size: int | None = None
    fit_args: dict[str, Any] | None = None
    attack_args: dict[str, Any] | None = None


@dataclass
class StudyResult:
    """What :func:`run_study` did: per victim its model URI, fit and attack runs, and whether each was reused."""

    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    report: Any = None
    seconds: float = 0.0


def study_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="mlattack study",
        description="Fit several victims on one dataset, register and attack each, then run the report "
        "(see configs/study-architectures.yaml). Re-running skips finished fits and attack runs.",
    )
    parser.add_argument(
        "-c", "--config", action=ActionConfigFile, help="a study YAML (configs/... paths work)"
    )
    parser.add_argument(
        "--name", type=str, default="architectures", help="the study's name (experiment, folder)"
    )
    parser.add_argument(
        "--data", type=str, default="configs/data/synthetic.yaml", help="data config of every stage"
    )
    parser.add_argument(
        "--models", type=list[StudyModel], required=True, help="the victims: {name, config, ...}"
    )
    parser.add_argument("--attack_config", type=str, default="configs/attack-demo.yaml",
                        help="the `mlattack attack` config every victim is attacked with")  # fmt: skip
    parser.add_argument(
        "--num_samples", type=int | None, default=None, help="N (default: the attack config's)"
    )
    parser.add_argument("--fit_args", type=dict[str, Any] | None, default=None,
                        help="`mlattack fit` options for every victim, e.g. {trainer.max_epochs: 6}")  # fmt: skip
    parser.add_argument(
        "--accelerator", type=str, default="auto", help="Lightning accelerator of every stage"
    )
    parser.add_argument("--output_dir", type=str | None, default=None,
                        help="checkpoints, attack records and report (default: outputs/study-<name>)")  # fmt: skip
    parser.add_argument("--tracking_uri", type=str | None, default=None,
                        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else the SQLite store in ./mlruns)")  # fmt: skip
    parser.add_argument(
        "--report", type=bool, default=True, help="end with `mlattack report` on the study's runs"
    )
    return parser


def _key(*parts: Any) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _options(values: dict[str, Any]) -> list[str]:
    """``{a.b: v}`` -> ``["--a.b", "v"]`` (non-strings as JSON, which the parser reads as YAML)."""
    return [a for k, v in values.items() for a in (f"--{k}", v if isinstance(v, str) else json.dumps(v))]


def _finished_run(
    client: mlflow.MlflowClient, experiment: str, tag: str, key: str
) -> mlflow.entities.Run | None:
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    found = client.search_runs([exp.experiment_id], f"tags.`{tag}` = '{key}' and attributes.status = 'FINISHED'",
                               max_results=1, order_by=["attributes.start_time DESC"])  # fmt: skip
    return found[0] if found else None


def _fit(run: Runner, client, cfg: Namespace, model: StudyModel, source: str, out: Path, uri: str) -> dict:
    """Fit and register ``model`` unless a finished fit with the same key exists; resume a killed one."""
    config, data = find_config(model.config), find_config(cfg.data)
    extra = {**(cfg.fit_args or {}), **(model.fit_args or {})}
    key = _key(config.read_text(), data.read_text(), model.image_size, extra)
    done = _finished_run(client, EXPERIMENT, FIT_KEY_TAG, key)
    if done is not None and REGISTERED_TAG in done.data.tags:
        print(
            f"[study] {model.name}: fit {key} done (run {done.info.run_id}), using {done.data.tags[REGISTERED_TAG]}"
        )
        return {"model_uri": done.data.tags[REGISTERED_TAG], "fit_run": done.info.run_id, "fit_reused": True}
    ckpt_dir = out / "fits" / key
    args = ["fit", "--config", str(config), "--data", str(data), "--registry.name", f"{model.name}-{source}",
            "--checkpoint.dirpath", str(ckpt_dir), "--trainer.default_root_dir", str(out / "fits"),
            "--trainer.accelerator", cfg.accelerator, "--trainer.logger.init_args.tracking_uri", uri,
            "--trainer.logger.init_args.artifact_location", default_artifact_location(uri)]  # fmt: skip
    args += ["--data.image_size", str(model.image_size)] if model.image_size else []
    args += _options(extra)
    if (ckpt_dir / "last.ckpt").is_file():  # killed midway: continue that fit, in its own run
        args += ["--ckpt_path", str(ckpt_dir / "last.ckpt")]
    print(f"[study] {model.name}: fitting ({' '.join(args[1:])})")
    cli = run(args)
    reg = next((c for c in cli.trainer.callbacks if isinstance(c, RegisterBestModel)), None)
    if reg is None or reg.model_uri is None:
        raise RuntimeError(f"models.{model.name}: the fit registered no model; see the log above")
    run_id = mlflow_logger(cli.trainer).run_id
    client.set_tag(run_id, STUDY_TAG, cfg.name)
    client.set_tag(run_id, FIT_KEY_TAG, key)  # last: only a registered fit is ever reused
    return {"model_uri": reg.model_uri, "fit_run": run_id, "fit_reused": False}


def _attack(
    run: Runner, client, cfg: Namespace, model: StudyModel, model_uri: str, out: Path, uri: str
) -> dict:
    """Attack ``model_uri`` with the study's attack config unless a finished attack run with the same key exists."""
    attack_config, data = find_config(cfg.attack_config), find_config(cfg.data)
    experiment = f"mlattack-study-{cfg.name}"
    key = _key(model_uri, attack_config.read_text(), data.read_text(), model.image_size, cfg.num_samples,
               *([model.attack_args] if model.attack_args else []))  # fmt: skip
    done = _finished_run(client, experiment, ATTACK_KEY_TAG, key)
    if done is not None:
        print(f"[study] {model.name}: attack run {done.info.run_id} done, skipped")
        return {"attack_run": done.info.run_id, "attack_reused": True}
    args = ["attack", "--config", str(attack_config), "--model", model_uri, "--data", str(data),
            "--experiment", experiment, "--tracking_uri", uri, "--output_dir", str(out / "attacks"),
            "--accelerator", cfg.accelerator]  # fmt: skip
    args += ["--data.image_size", str(model.image_size)] if model.image_size else []
    args += ["--num_samples", str(cfg.num_samples)] if cfg.num_samples else []
    args += _options(model.attack_args or {})
    print(
        f"[study] {model.name}: attacking {model_uri}"
        + (f" ({model.attack_args})" if model.attack_args else "")
    )
    report = run(args)
    client.set_tag(report.parent_run_id, STUDY_TAG, cfg.name)
    client.set_tag(report.parent_run_id, ATTACK_KEY_TAG, key)
    return {"attack_run": report.parent_run_id, "attack_reused": False}


def run_study(cfg: Namespace, run: Runner) -> StudyResult:
    """Fit, register and attack every victim of ``cfg.models`` in turn, then the report (module docstring).

    ``run`` executes one ``mlattack`` command line (the CLI hands in its own, so this module never imports it).
    """
    start, result = time.time(), StudyResult()
    names = [m.name for m in cfg.models]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"models: give at least one victim, each with its own name (got {names})")
    source = yaml.safe_load(find_config(cfg.data).read_text())["source"]
    uri = cfg.tracking_uri or default_tracking_uri()
    out = Path(cfg.output_dir or f"outputs/study-{cfg.name}")
    client = mlflow.MlflowClient(uri)
    for model in cfg.models:
        t0 = time.time()
        entry = _fit(run, client, cfg, model, source, out, uri)
        t1 = time.time()
        try:
            entry |= _attack(run, client, cfg, model, entry["model_uri"], out, uri)
        except ValueError as e:  # e.g. a weak victim predicts no test sample correctly: the others still run
            entry["attack_error"] = str(e)
            print(f"[study] {model.name}: not attacked: {e}")
        entry |= {"fit_seconds": round(t1 - t0, 1), "attack_seconds": round(time.time() - t1, 1)}
        result.models[model.name] = entry
        print(
            f"[study] {model.name}: fit {entry['fit_seconds']:.0f} s, attack {entry['attack_seconds']:.0f} s"
        )
    if cfg.report:
        report_args = ["report", "--experiment", f"mlattack-study-{cfg.name}", "--tracking_uri", uri,
                       "--output_dir", str(out / "report")]  # fmt: skip
        result.report = run(report_args)
    result.seconds = time.time() - start
    for name, entry in result.models.items():
        if "attack_error" in entry:
            print(f"[study] {name} is missing from the report: {entry['attack_error']}")
    print(f"[study] {cfg.name}: {len(names)} victims in {result.seconds:.0f} s; report in {out / 'report'}")
    return result
