"""What the ``mlattack`` command says about a mistake on its command line, in the user's terms: the config file and
line that is not YAML, the config file that set a rejected key, a mistyped subcommand or file name (did you mean
...?), options before the subcommand. :mod:`mlattack.errors` turns any expected error into one line; this module
adds what only the command line knows."""

from __future__ import annotations

import difflib
import errno
import re
from argparse import ArgumentError
from collections.abc import Iterable
from pathlib import Path

from mlattack.config_checks import check_class_path, check_config_text
from mlattack.errors import UserError, format_error, resume_hint
from mlattack.resources import shipped_config, similar_config


def check_yaml_syntax(args: list[str]) -> None:
    """A config file given on the command line that is not valid YAML is named with its line (the parser
    reports only "<unicode string>"); one with an alias loop or a ``class_path`` outside mlattack, torch and
    Lightning is refused before the parser imports anything (so is such an option value)."""
    import yaml

    for i, arg in enumerate(args):
        path = Path(arg.partition("=")[2] if arg.startswith("-") else arg)
        named = arg.startswith(("--config=", "-c=")) or (i > 0 and args[i - 1] in ("--config", "-c"))
        if named and path.suffix in (".yaml", ".yml") and not path.exists():
            # the parser's own message, before it imports the model libraries to build itself
            raise ArgumentError(None, f"config: file does not exist: '{path.absolute()}'")
        if path.suffix in (".yaml", ".yml") and path.is_file():
            try:
                check_config_text(path.read_text(), str(path))
            except yaml.YAMLError as e:
                mark = getattr(e, "problem_mark", None)
                line = f":{mark.line + 1}" if mark is not None else ""
                problem = getattr(e, "problem", None) or str(e).splitlines()[0]
                raise UserError(f"{path}{line}: not valid YAML ({problem})") from e
        elif "class_path" in arg or (i > 0 and args[i - 1].endswith(".class_path")):
            option = args[i - 1] if i > 0 and args[i - 1].startswith("-") else "the command line"
            value = arg.partition("=")[2] if arg.startswith("-") else arg
            if option.endswith(".class_path") or arg.partition("=")[0].endswith(".class_path"):
                check_class_path(value, option)
                continue
            try:
                check_config_text(value, option)
            except yaml.YAMLError:
                pass  # not YAML: the parser reports it


def config_file_setting(key: str, args: list[str]) -> str | None:
    """The config file on the command line that sets the dotted ``key`` (``--data f.yaml`` sets ``data.*``)."""
    import yaml

    pairs = [(a.partition("=")[0], a.partition("=")[2]) for a in args if a.startswith("-") and "=" in a]
    pairs += [(a, b) for a, b in zip(args, args[1:], strict=False) if a.startswith("-") and "=" not in a]
    for option, value in pairs:
        if not value.endswith((".yaml", ".yml", ".json")) or not Path(value).is_file():
            continue
        group = "" if option in ("-c", "--config") else option.lstrip("-") + "."
        if not key.startswith(group):
            continue
        node = yaml.safe_load(Path(value).read_text())
        for part in key[len(group) :].split("."):
            node = node.get(part, KeyError) if isinstance(node, dict) else KeyError
        if node is not KeyError:
            return value
    return None


def what_next(message: str, typed: list[str], subcommands: Iterable[str]) -> str | None:
    """A report in the user's terms for parser errors that otherwise name what the user did not type: a
    mistyped subcommand or config file name (did you mean ...?), options given before the subcommand."""
    first = message.split("\n")[0]
    choice = re.search(r"invalid choice: '([^']+)' \(choose from ([^)]*)\)", first)
    if choice:
        guess = difflib.get_close_matches(
            choice.group(1), re.findall(r"'([^']+)'", choice.group(2)), n=1, cutoff=0.6
        )
        return f"{first}\n  hint: did you mean {guess[0]}?" if guess else None
    missing = re.search(r"file does not exist: '([^']+)'", first)
    if missing:
        guess = similar_config(missing.group(1))
        return f"{first}\n  hint: did you mean {guess}?" if guess else None
    before = re.search(r"before subcommand '(\w+)'", first)
    if before:
        sub = before.group(1)
        head = typed[: typed.index(sub)] if sub in typed else [a for a in typed if a.startswith("-")]
        rest = typed[typed.index(sub) + 1 :] if sub in typed else []
        return (
            f"mlattack: error: {' '.join(head)}: options go after the subcommand, not before '{sub}'\n"
            f"  hint: mlattack {' '.join([sub, *head, *rest])}"
        )
    return None


def report_error(
    e: BaseException,
    args: list[str],
    subcommands: Iterable[str],
    moved: dict[str, str],
    typed: list[str] | None = None,
) -> str:
    """The report of an expected error for ``mlattack <args>`` (``typed``: the arguments as the user typed them,
    before shipped config paths were filled in). A parser error's key loses the subcommand path
    ("data.stats.split" -> "split"), names the config file that set it, and gains a hint."""
    message = format_error(e)
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT) and "\n" not in message:
        return f"{message}\n  hint: free some space (or choose another folder), then {resume_hint(args)}"
    if not isinstance(e, ArgumentError):
        return message
    subcommands = list(subcommands)
    better = what_next(message, [a for a in (typed or args) if a != "--debug"], subcommands)
    if better:
        return better
    sub = next((a for a in args if a in set(subcommands)), None)
    command = " ".join([sub, "stats"] if sub == "data" and "stats" in args else [sub] if sub else [])
    if command:
        message = re.sub(rf"(error: |, ){re.escape(command.replace(' ', '.'))}\.", r"\1", message)
    rejected = re.search(r"does not accept option '([\w.]+)'", message)
    source = config_file_setting(rejected.group(1), args) if rejected else None
    if source:
        message = message.replace("error: ", f"error: {source}: ", 1)
    moved_to = next((h for key, h in moved.items() if key in message.split("\n")[0]), None)
    if moved_to:
        return f"{message.split(chr(10))[0]}\n  hint: {moved_to}"
    nested = re.search(r"unable to load config '([^']+)'", message)
    shipped = shipped_config(nested.group(1)) if nested else None
    if (
        shipped is not None and "\n" not in message
    ):  # --config falls back to the shipped file; a nested path does not
        return (
            f"{message}\n  hint: a config named inside a config file is read from the working directory or that "
            f"file's folder; mlattack's {nested.group(1)} is {shipped}: give that path, or copy it next to your file"
        )
    if "\n" not in message:
        usage = " ".join(["mlattack", *([command] if command else []), "--help"])
        message += f"\n  hint: `{usage}` lists the options"
    return message
