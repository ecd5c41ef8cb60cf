"""Answers that need no model library: ``mlattack --version``, ``mlattack --help``, and a subcommand's ``--help``
read back from a cache, so a newcomer's first commands (and each typo) answer in well under two seconds.

Building the full parser imports Lightning, torch, torchvision, timm and MLflow (seconds, more under load). The
top-level help needs none of them: :func:`top_parser` builds the same parser without the subcommands' options
(tests/cli/test_fast_answers.py checks that the two print the same text). A subcommand's help does need them once:
its text is kept in the user's cache folder, keyed by everything that can change it (the command line, the terminal
width, mlattack's source files, the versions of the libraries that describe options, and the working directory and
tracking URI where the text shows them), and printed from there the next time.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import sys
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import mlattack

#: libraries whose versions change what a subcommand's help says
HELP_LIBRARIES = (
    "jsonargparse",
    "pytorch-lightning",
    "torch",
    "torchvision",
    "timm",
    "mlflow",
    "torchmetrics",
)


def top_parser(subcommands: dict[str, str], description: str, epilog: str, formatter_class: type):
    """The top-level ``mlattack`` parser as ``--help`` shows it: the same options as the full parser, and each
    subcommand with its help line but without its own options."""
    from jsonargparse import ActionConfigFile, ArgumentParser

    parser = ArgumentParser(
        prog="mlattack", description=description, epilog=epilog, formatter_class=formatter_class
    )
    parser.add_argument(
        "-c", "--config", action=ActionConfigFile, help="Path to a configuration file in json or yaml format."
    )
    add_version_and_debug(parser)
    commands = parser.add_subcommands()
    for name, text in subcommands.items():
        commands.add_subcommand(name, ArgumentParser(), help=text)
    return parser


def add_version_and_debug(parser) -> None:
    """The two options of the top-level parser that are mlattack's own (the full parser adds them too)."""
    parser.add_argument(
        "--version",
        action="version",
        version=f"mlattack {mlattack.__version__}",
        help="print the version and exit",
    )
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of an error (also: MLATTACK_DEBUG=1)"
    )


def is_top_level_help(args: list[str]) -> bool:
    """``mlattack --help`` / ``-h`` (``--debug`` aside): nothing else on the line."""
    rest = [a for a in args if a != "--debug"]
    return rest in (["--help"], ["-h"])


def subcommand_help_request(args: list[str]) -> bool:
    """``mlattack <sub> [<sub>] --help``: only subcommand words before the flag, so the text depends on nothing
    the user typed besides them (a ``--config`` before ``--help`` changes the defaults shown: not cached)."""
    if not args or args[-1] not in ("-h", "--help"):
        return False
    words = args[:-1]
    return 1 <= len(words) <= 2 and all(w.isidentifier() for w in words)


def cache_dir() -> Path:
    """``$MLATTACK_CACHE_DIR``, else ``$XDG_CACHE_HOME/mlattack``, else ``~/.cache/mlattack``."""
    if os.environ.get("MLATTACK_CACHE_DIR"):
        return Path(os.environ["MLATTACK_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mlattack"


def _source_signature() -> list[tuple[str, int, int]]:
    root = Path(mlattack.__file__).resolve().parent
    files = sorted(root.rglob("*.py"))
    return [(str(p.relative_to(root)), p.stat().st_mtime_ns, p.stat().st_size) for p in files]


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "-"


def help_cache_file(args: list[str], here: bool) -> Path:
    """Where the help text of ``args`` is kept; the name changes whenever something that shapes the text does.
    ``here``: the text shows this folder or the tracking URI (the default store in a Trainer command's defaults),
    so it is kept for this folder and URI only."""
    key = {
        "args": args,
        "version": mlattack.__version__,
        "width": shutil.get_terminal_size().columns,
        "here": [os.getcwd(), os.environ.get("MLFLOW_TRACKING_URI", "")] if here else None,
        "python": sys.version,
        "libraries": [_version(n) for n in HELP_LIBRARIES],
        "source": _source_signature(),
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    return cache_dir() / "help" / f"{digest}.txt"


def cached_help(args: list[str], build: Callable[[], None]) -> None:
    """Print the help of ``args`` from the cache, or run ``build`` (which prints it and exits 0) and keep what it
    printed. Raises SystemExit(0) after printing, as argparse does."""
    for here in (False, True):
        path = help_cache_file(args, here)
        if path.is_file():
            sys.stdout.write(path.read_text())
            raise SystemExit(0)
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            build()
    except SystemExit as e:
        text = out.getvalue()
        sys.stdout.write(text)
        if e.code in (0, None) and text.startswith("usage:"):
            uri = os.environ.get("MLFLOW_TRACKING_URI")
            flat = "".join(text.split())  # help wraps long defaults, paths included
            here = os.getcwd() in flat or bool(uri and uri in flat)
            keep(help_cache_file(args, here), text)
        raise
    sys.stdout.write(out.getvalue())


def keep(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all; a read-only home only loses the speed-up."""
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(text)
        tmp.replace(path)
