"""The settings of one ``mlattack attack`` run that change its numbers, validated in one place, and its run key."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, replace
from typing import Literal, get_args

from mlattack.attacks.base import Attack
from mlattack.evaluation.drivers import Driver, paper_driver

log = logging.getLogger(__name__)

#: Lightning precision strings the attack loop implements: fp32, or the attacks' forward passes under autocast.
#: "-true" half precision would cast the attacked network's weights, i.e. attack another model; refused.
Precision = Literal["32-true", "32", "16-mixed", "bf16-mixed", "16", "bf16"]
Mode = Literal["paper", "fast"]
Quantize = Literal["floor", "round", "none"]
#: what fast mode attacks (:func:`mlattack.evaluation.fast.attack_network`): the network itself ("exact": a sample's
#: path is paper mode's until early stop ends it), or a BatchNorm-folded channels_last copy ("folded", "compiled":
#: faster steps, but float rounding can end a sample that runs its whole budget a label higher or lower)
FastNetwork = Literal["exact", "folded", "compiled"]
QUANTIZE_RULES: tuple[str, ...] = get_args(Quantize)
#: the one table of supported precisions: the autocast dtype of the attacks' forward passes (None: fp32)
PRECISION_TO_AUTOCAST: dict[str, str | None] = {
    "32-true": None, "32": None, "16-mixed": "fp16", "bf16-mixed": "bf16", "16": "fp16", "bf16": "bf16",
}  # fmt: skip
assert set(PRECISION_TO_AUTOCAST) == set(get_args(Precision)), "Precision and its table disagree"


def apply_mode(attack: Attack, fast: bool, precision: str) -> Attack:
    """The run-time settings a mode gives an attack, applied before its parameters are logged or hashed.

    Paper mode runs each attack as configured (its own stopping rule included); fast mode adds the per-sample stop
    once every label shows. Mixed precision runs the forward passes under autocast. ``precision`` is one that
    :class:`AttackSettings` accepted (it validates the run's settings, once).
    """
    if fast:
        attack.early_stop = True
    attack.autocast = PRECISION_TO_AUTOCAST[str(precision)]
    return attack


@dataclass(frozen=True)
class AttackSettings:
    """What ``run_attacks`` was asked for beyond model, data and attacks (see its docstring for each field).

    ``num_samples``, ``min_positive`` and ``quantize`` left ``None`` are the driver's (:meth:`for_driver`): paper
    mode follows the study's driver for the attacked network and dataset (:mod:`mlattack.evaluation.drivers`).
    """

    num_samples: int | None = None
    mode: Mode = "paper"
    batch_size: int = 10
    min_positive: int | None = None
    quantize: Quantize | None = None
    precision: Precision = "32-true"
    fast_network: FastNetwork = "exact"
    seed: int = 123
    accelerator: str = "auto"
    devices: int | str = 1
    strategy: str = "auto"
    num_nodes: int = 1
    driver: str = ""  # the driver whose values filled the unset fields (:meth:`for_driver`)

    def __post_init__(self) -> None:
        for name in ("num_samples", "batch_size"):
            if getattr(self, name) is not None and int(getattr(self, name)) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.min_positive is not None and self.min_positive < 1:
            raise ValueError(f"min_positive must be >= 1, got {self.min_positive}")
        if self.mode not in get_args(Mode):
            raise ValueError(f"mode must be one of {list(get_args(Mode))}, got {self.mode!r}")
        if self.fast_network not in get_args(FastNetwork):
            raise ValueError(
                f"fast_network must be one of {list(get_args(FastNetwork))}, got {self.fast_network!r}"
            )
        if self.fast_network != "exact" and not self.fast:
            log.warning(
                "fast_network %r applies to mode 'fast' only; paper mode attacks the network itself",
                self.fast_network,
            )
        if self.quantize is not None and self.quantize not in QUANTIZE_RULES:
            raise ValueError(f"quantize must be one of {list(QUANTIZE_RULES)}, got {self.quantize!r}")
        if str(self.precision) not in get_args(Precision):
            hint = ""
            if str(self.precision).endswith("-true"):
                hint = (
                    " (half-precision weights would change the attacked network itself; "
                    "'16-mixed' or 'bf16-mixed' run the attacks' forward passes under autocast)"
                )
            raise ValueError(
                f"precision must be one of {list(get_args(Precision))}, got {self.precision!r}{hint}"
            )

    def for_driver(self, network: str, source: str) -> AttackSettings:
        """These settings with every unset field taken from the study's driver for ``network`` on ``source``
        (:func:`~mlattack.evaluation.drivers.paper_driver`); fast mode judges the float images unless told."""
        d: Driver = paper_driver(network, source)
        quantize = self.quantize or (d.quantize if self.mode == "paper" else "none")
        return replace(self, num_samples=self.num_samples or d.num_samples, quantize=quantize,
                       min_positive=self.min_positive or d.min_positive, driver=d.name)  # fmt: skip

    @property
    def fast(self) -> bool:
        return self.mode == "fast"

    @property
    def label(self) -> str:
        """The run's mode as a person reads it: "paper mode" or e.g. "fast mode, exact network"."""
        return f"fast mode, {self.fast_network} network" if self.fast else "paper mode"


def run_key(selection_key: str, hyperparameters: dict, sample_counts: list, settings: AttackSettings) -> str:
    """The run's identity: the selection (which includes the model's weights digest), every attack's settings as
    they run, and every setting that changes a number. Same key = same results, so a run may be resumed."""
    s = settings
    parts = [
        selection_key,
        hyperparameters,
        sample_counts,
        s.seed,
        s.precision,
        s.mode,
        s.batch_size,
        s.quantize,
    ]
    if s.fast:  # paper-mode keys stay as they were; fast runs of another network are other runs
        parts.append(s.fast_network)
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]
