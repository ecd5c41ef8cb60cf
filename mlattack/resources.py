"""Where mlattack's shipped configuration files are found, from a clone and from an installed wheel alike.

The configs live in ``configs/`` at the repository root (so ``--config configs/demo.yaml`` reads naturally from a
clone); ``mlattack/configs`` is a symbolic link to that folder, which is how setuptools copies them into the wheel
as package data. :func:`config_dir` asks ``importlib.resources`` for the package's ``configs`` folder, so the same
code finds them in a clone, an editable install and an installed wheel.

A path such as ``configs/attack/pgd.yaml`` is looked up in the working directory first (a user's own file wins),
then among the shipped configs. :func:`find_config` is the one place that knows this, so the CLI, the attack runner
and the report find configs the same way.
"""

from __future__ import annotations

import difflib
from importlib import resources
from pathlib import Path

#: file name endings that mark a command-line value as a config file
CONFIG_SUFFIXES = (".yaml", ".yml", ".json")


def config_dir() -> Path:
    """The shipped ``configs/`` folder: ``mlattack/configs`` in the package (a link to the repository's
    ``configs/`` in a clone), or the repository's folder itself where the link did not survive (e.g. a checkout
    without symbolic links)."""
    packaged = resources.files("mlattack") / "configs"
    if isinstance(packaged, Path) and packaged.is_dir():
        return packaged
    in_clone = Path(__file__).resolve().parents[1] / "configs"
    if in_clone.is_dir():
        return in_clone
    raise FileNotFoundError(
        f"mlattack's shipped configs are missing (looked in {packaged} and {in_clone}); reinstall the package"
    )


def shipped_config(path: str | Path) -> Path | None:
    """The shipped file that ``path`` names (``configs/...`` or relative to ``configs/``), if there is one."""
    p = Path(path)
    if p.is_absolute():
        return None
    rel = Path(*p.parts[1:]) if p.parts[:1] == ("configs",) else p
    if not rel.parts:
        return None
    shipped = config_dir() / rel
    return shipped if shipped.is_file() else None


def find_config(path: str | Path) -> Path:
    """``path`` as given if it exists, else the shipped file of that name; FileNotFoundError naming both places
    otherwise."""
    p = Path(path)
    if p.is_file():
        return p
    shipped = shipped_config(p)
    if shipped is not None:
        return shipped
    raise FileNotFoundError(f"config {str(path)!r} not found (looked in {Path.cwd()} and {config_dir()})")


def similar_config(path: str | Path) -> str | None:
    """The config file most like a missing ``path`` (``configs/demo.yml`` -> ``configs/demo.yaml``), looked for
    beside it and among the shipped configs, as the user would type it; None when nothing is close."""
    p = Path(path)
    try:
        typed = p.relative_to(Path.cwd()) if p.is_absolute() else p
    except ValueError:
        typed = p
    parent = typed.parent
    shipped = (
        config_dir() / Path(*parent.parts[1:]) if parent.parts[:1] == ("configs",) else config_dir() / parent
    )
    names = {f.name for folder in (p.parent, shipped) if folder.is_dir() for f in folder.iterdir()}
    names = sorted(n for n in names if n.endswith(CONFIG_SUFFIXES))
    match = difflib.get_close_matches(p.name, names, n=1, cutoff=0.6)
    return str(parent / match[0]) if match else None


def resolve_config_args(argv: list[str]) -> list[str]:
    """Command-line values that name a config file (``.yaml``/``.yml``/``.json``) missing from the working
    directory but shipped with mlattack are replaced by the shipped file's path, so ``--config
    configs/demo.yaml`` works from any directory. Other values are left alone (a missing file is reported by the
    parser, naming the path the user typed)."""
    out = []
    for arg in argv:
        opt, eq, value = arg.partition("=") if arg.startswith("-") else ("", "", arg)
        if not eq and opt:
            out.append(arg)
            continue
        if value.endswith(CONFIG_SUFFIXES) and not Path(value).exists():
            shipped = shipped_config(value)
            if shipped is not None:
                value = str(shipped)
        out.append(f"{opt}={value}" if eq else value)
    return out
