"""Where mlattack's shipped configuration files are found.

A path such as ``configs/attack/pgd.yaml`` is looked up in the working directory first (a user's own file wins),
then among the project's shipped configs. ``find_config`` is the one place that knows where those live, so the
CLI, the attack runner and the report find them the same way.
"""

from __future__ import annotations

from pathlib import Path

#: the folder that holds ``configs/`` (the project root in a clone)
CONFIG_ROOT = Path(__file__).resolve().parents[1]


def config_dir() -> Path:
    """The shipped ``configs/`` folder."""
    return CONFIG_ROOT / "configs"


def find_config(path: str | Path) -> Path:
    """``path`` as given if it exists, else the shipped file of that name (``configs/...`` or relative to
    ``configs/``); FileNotFoundError naming both places otherwise."""
    p = Path(path)
    if p.is_file():
        return p
    rel = Path(*p.parts[1:]) if p.parts[:1] == ("configs",) else p
    shipped = config_dir() / rel
    if not p.is_absolute() and shipped.is_file():
        return shipped
    raise FileNotFoundError(f"config {str(path)!r} not found (looked in {Path.cwd()} and {config_dir()})")
