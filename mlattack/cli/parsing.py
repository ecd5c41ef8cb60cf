"""What every ``mlattack`` subcommand beside Lightning's is made of: a :class:`Tool` (help line, parser builder,
runner), the ``--config`` option, and help text taken from a function's docstring. The runners get ``run``, the
``mlattack`` command itself (handed in by :mod:`mlattack.cli`), so no module here imports back up."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jsonargparse import ActionConfigFile, ArgumentParser, Namespace


def docstring_help(fn: Callable) -> dict[str, str]:
    """Argument descriptions from ``fn``'s docstring, whatever its section header says ("Arguments (besides the
    obvious ones):" included); an entry naming several arguments ("a, b: ...") describes each."""
    import docstring_parser

    doc = re.sub(r"(?m)^(\s*)Arguments\b[^\n]*:\s*$", r"\1Args:", inspect.getdoc(fn) or "")
    out = {}
    for param in docstring_parser.parse(doc, docstring_parser.DocstringStyle.GOOGLE).params:
        for name in param.arg_name.split(","):
            out[name.strip()] = " ".join((param.description or "").split())
    return out


def fill_missing_help(parser: ArgumentParser, helps: dict[str, str]) -> None:
    """Give the options named in ``helps`` (by dest) that have no help text from a docstring their help."""
    for action in parser._actions:
        text = helps.get(action.dest)
        if text and not action.help:
            action.help = text


#: the ``mlattack`` command as a function: a command line in, what the command made out (:func:`mlattack.cli.run`)
RunCommand = Callable[[list[str]], Any]


@dataclass
class Tool:
    """A subcommand that is not a Trainer method: one help line, its parser, what runs it, and the subcommands
    of its own (added once its parser is in place, as jsonargparse wants)."""

    help: str
    build: Callable[[], ArgumentParser]
    run: Callable[[ArgumentParser, Namespace, RunCommand], Any]
    subcommands: Callable[[ArgumentParser], dict[str, ArgumentParser]] | None = None


def config_argument(parser: ArgumentParser) -> None:
    """``-c/--config``: a YAML file of the subcommand's options."""
    parser.add_argument(
        "-c",
        "--config",
        action=ActionConfigFile,
        help="a YAML file of these options (configs/... paths work "
        "from any directory: they fall back to the configs shipped with mlattack)",
    )
