"""The ``attacks:`` entries of an attack config: one attack inline or from a per-attack YAML file, or a sweep.

Every attack, swept ones included, is built by its own constructor, so its argument checks (``eps`` finite and
> 0, ``nb_iter`` >= 1, ...) apply to every value that runs.
"""

from __future__ import annotations

import copy
import inspect
import itertools
from dataclasses import dataclass

from mlattack.attacks.base import Attack
from mlattack.resources import find_config

SWEEP_BASE_TAG, SWEEP_PARAM_TAG, SWEEP_VALUE_TAG = (
    "mlattack.sweep_base",
    "mlattack.sweep_param",
    "mlattack.sweep_value",
)
GRID_BASE_TAG, GRID_PARAMS_TAG, GRID_VALUE_PREFIX = (
    "mlattack.grid_base",
    "mlattack.grid_params",
    "mlattack.grid.",
)


@dataclass
class AttackSpec:
    """One entry of ``attacks:`` in a config.

    Give either ``attack`` inline (``class_path``/``init_args``) or ``config``, the path of one of the per-attack
    YAML files (``configs/attack/pgd.yaml``; relative paths are tried against the working directory, then the
    project's ``configs/``), optionally with ``overrides`` of its init_args. ``name`` labels the attack in tables
    and runs (default: the class name); ``num_samples`` overrides N (e.g. 200 for MLA-LP). ``sweep`` maps init
    arguments to lists of values: one argument is a budget sweep (``{eps: [0.001, 0.003, 0.01]}``, children
    ``<name>[eps=0.003]``); several are a sensitivity grid over their product (``{eps: [...], nb_iter: [...]}``,
    children ``<name>[eps=0.03,nb_iter=10]``). One attack and one child run per point, each built by the attack's
    constructor, so a bad value fails before any run starts.
    """

    attack: Attack | None = None
    config: str | None = None
    overrides: dict | None = None
    name: str | None = None
    num_samples: int | None = None
    sweep: dict[str, list] | None = None

    def build(self) -> list[tuple[str, Attack, dict[str, str]]]:
        """[(name, attack instance, tags)] — one entry, or one per sweep value / grid point."""
        if (self.attack is None) == (self.config is None):
            raise ValueError(
                "each attacks entry needs exactly one of `attack` (class_path/init_args) or `config`"
            )
        if not self.sweep:
            attack = (
                self.attack if self.attack is not None else load_attack_config(self.config, self.overrides)
            )
            return [(self.name or type(attack).__name__, attack, {})]
        keys = list(self.sweep)
        for arg in keys:
            values = self.sweep[arg]
            if not isinstance(values, list) or not values:
                raise ValueError(f"sweep.{arg}: give a list of at least one value, got {values!r}")
        out = []
        for point in itertools.product(*(self.sweep[k] for k in keys)):
            changes = dict(zip(keys, point, strict=True))
            if self.config is not None:
                attack = load_attack_config(self.config, {**(self.overrides or {}), **changes})
            else:
                try:
                    attack = rebuild_attack(self.attack, **changes)
                except (TypeError, ValueError) as e:
                    where = ", ".join(f"sweep.{k}={v!r}" for k, v in changes.items())
                    raise ValueError(f"{where} for {type(self.attack).__name__}: {e}") from e
            base = self.name or type(attack).__name__
            label = ",".join(f"{k}={v}" for k, v in changes.items())
            if len(keys) == 1:  # a budget curve
                tags = {SWEEP_BASE_TAG: base, SWEEP_PARAM_TAG: keys[0], SWEEP_VALUE_TAG: str(point[0])}
            else:  # a sensitivity grid: one child per point of the product
                tags = {
                    GRID_BASE_TAG: base,
                    GRID_PARAMS_TAG: ",".join(keys),
                    **{f"{GRID_VALUE_PREFIX}{k}": str(v) for k, v in changes.items()},
                }
            out.append((f"{base}[{label}]", attack, tags))
        return out


def rebuild_attack(attack: Attack, **changes: object) -> Attack:
    """A new attack of the same class from ``attack``'s settings with ``changes``, through the constructor.

    The settings are the constructor's arguments as the attack stores them (attributes of the same name); the
    rebuilt attack must reproduce the original's hyperparameters, else the class is not rebuildable this way and
    a ValueError says so (give the attack as ``config:`` with ``overrides`` instead).
    """
    cls = type(attack)
    params = [
        p
        for p in inspect.signature(cls.__init__).parameters.values()
        if p.name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]
    names = {p.name for p in params}
    unknown = sorted(set(changes) - names)
    if unknown:
        raise ValueError(
            f"{cls.__name__} has no argument {', '.join(map(repr, unknown))} (it takes {sorted(names)})"
        )
    current = copy.deepcopy({p.name: getattr(attack, p.name) for p in params if hasattr(attack, p.name)})
    same = cls(**current)
    if same.hyperparameters() != attack.hyperparameters():
        raise ValueError(f"{cls.__name__} cannot be rebuilt from its attributes; sweep it through `config:`")
    return cls(**{**current, **changes})


def load_attack_config(path: str, overrides: dict | None = None) -> Attack:
    """Instantiate an attack from a ``class_path``/``init_args`` YAML file (with optional overrides)."""
    from jsonargparse import ArgumentParser

    try:
        p = find_config(path)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"attack {e}") from None
    from mlattack.config_checks import check_config_text, check_config_value

    spec = check_config_text(
        p.read_text(), str(p)
    )  # no alias loop, no class_path imported before it is checked
    check_config_value(overrides, f"{p} (overrides)")
    if not isinstance(spec, dict) or "class_path" not in spec:
        raise ValueError(f"{p}: expected a mapping with `class_path` (and `init_args`) of an attack")
    spec = {
        "class_path": spec["class_path"],
        "init_args": {**(spec.get("init_args") or {}), **(overrides or {})},
    }
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--attack", type=Attack)
    try:  # jsonargparse names the offending key and the attack its bad value; add the file
        return parser.instantiate_classes(parser.parse_object({"attack": spec})).attack
    except Exception as e:
        raise ValueError(f"{p}: invalid attack config: {e}") from e


def build_specs(attacks: list[AttackSpec]) -> list[tuple[tuple[str, object, dict], AttackSpec]]:
    """Every (name, attack, tags) the specs expand to, each attack a copy, names unique; bad counts named."""
    if not attacks:
        raise ValueError("attacks: give at least one attack")
    # copies: the run-time settings (mode, precision) are applied to them, never to the caller's attacks
    built = [((n, copy.deepcopy(a), t), spec) for spec in attacks for (n, a, t) in spec.build()]
    names = [name for (name, _, _), _ in built]
    if len(set(names)) != len(names):
        raise ValueError(f"attacks: names must be unique, got {names} (set `name:` to tell them apart)")
    for spec in attacks:
        if spec.num_samples is not None and spec.num_samples <= 0:
            raise ValueError(f"attacks[{spec.name}].num_samples must be > 0, got {spec.num_samples}")
    return built
