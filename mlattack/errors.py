"""Mistakes in what a user gave — a config, a data folder, a model URI or checkpoint, a tracking server, a value —
end as one line that names what to fix, instead of a traceback whose last line was the message.

``mlattack`` reports an expected error as::

    mlattack: error: <file or field>: <what was wrong and what was expected>
      hint: <one line, where it helps>

and exits with code 2. Anything else (a bug) keeps its traceback, and ``MLATTACK_DEBUG=1`` or ``--debug`` shows the
traceback of expected errors too. Errors raised inside DataLoader worker processes arrive re-wrapped by PyTorch with
the worker's traceback in the message; :func:`one_line` takes the original message back out.
"""

from __future__ import annotations

import difflib
import errno
import os
import re
import signal
import sys
import threading
from argparse import ArgumentError
from collections.abc import Iterable
from pathlib import Path

#: exit code of an expected user error (argparse's convention for usage errors)
USER_ERROR_EXIT = 2

#: what ``mlattack`` exits with; ``mlattack --help`` and the README print this text
EXIT_STATUS = """\
Exit status: 0 success; 2 a mistake in the input or the environment (one line says what and where);
130 interrupted by Ctrl-C, 143 by SIGTERM (re-run the same command to resume); 1 a bug (with its traceback)."""


class Terminated(BaseException):
    """SIGTERM arrived. Raised from the signal handler so the command stops where it is, as Ctrl-C does (state files
    are written atomically or as whole lines, so a re-run resumes); not an Exception, so no ``except Exception``
    swallows it."""


#: modules in the middle of a tracking-store write: an exception raised there leaves SQLite's write lock with a
#: half-done transaction, and the KILLED status written next then fails with "database is locked"
_STORE_WRITERS = ("sqlalchemy.", "sqlite3", "mlflow.store.")
_MAX_DEFERRALS = 100  # x 50 ms: a store write that never ends does not keep SIGTERM waiting past 5 s
_deferrals = 0


def _in_store_write(frame: object) -> bool:
    while frame is not None:
        if str(frame.f_globals.get("__name__", "")).startswith(_STORE_WRITERS):  # type: ignore[attr-defined]
            return True
        frame = frame.f_back  # type: ignore[attr-defined]
    return False


def _on_sigterm(signum: int, frame: object) -> None:
    """Stop by raising :class:`Terminated`, but not inside a tracking-store write: there the signal is sent again
    50 ms later, so the write finishes (or rolls back) first."""
    global _deferrals
    if _deferrals < _MAX_DEFERRALS and _in_store_write(frame):
        _deferrals += 1
        threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGTERM)).start()
        return
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the clean-up short
    raise Terminated()


def stop_on_sigterm() -> None:
    """Make SIGTERM raise :class:`Terminated` (Lightning's trainer calls this handler after its own notifier)."""
    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, _on_sigterm)


def interrupt_exit(exc: BaseException) -> int | None:
    """128 + the signal's number when ``exc`` is how an interruption arrived, else None.

    Lightning turns Ctrl-C inside a trainer into ``sys.exit(1)`` (its KeyboardInterrupt in ``__context__``) and a
    SIGTERM it saw into ``SIGTERMException``, a SystemExit whose code is None (exit status 0).
    """
    if isinstance(exc, Terminated) or type(exc).__name__ == "SIGTERMException":
        return 128 + signal.SIGTERM
    if isinstance(exc, KeyboardInterrupt):
        return 128 + signal.SIGINT
    if isinstance(exc, SystemExit) and isinstance(exc.__context__, KeyboardInterrupt):
        return 128 + signal.SIGINT
    if isinstance(exc, SystemExit) and isinstance(exc.__context__, Terminated):
        return 128 + signal.SIGTERM
    return None


def resume_hint(args: list[str]) -> str:
    """What to do after an interruption of ``mlattack <args>``."""
    if "fit" in args:
        return "re-run the same command with --ckpt_path <the run's folder>/checkpoints/last.ckpt to resume"
    if "attack" in args or "study" in args or "evaluate" in args:
        return "re-run the same command to resume"
    return "re-run the same command"


class UserError(ValueError):
    """An expected mistake in the user's input; ``hint`` is one optional line on how to fix it.

    A ValueError so that code catching bad values keeps working, and constructible from the message alone so
    that PyTorch can re-raise it from a DataLoader worker with the same type.
    """

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class EnvironmentFault(RuntimeError):
    """A state of the environment that stops a command (a tracking server that does not answer, a run another
    process is writing): reported in one line like a user error, not a bug. The rooms that detect one derive
    their own type from it, so this module needs to know none of them."""


def with_hint(exc: BaseException, hint: str | None) -> BaseException:
    """Attach a one-line hint to an exception of another type (e.g. FileNotFoundError), for :func:`one_line`."""
    if hint:
        exc.hint = hint  # type: ignore[attr-defined]
    return exc


def debug_requested() -> bool:
    """``MLATTACK_DEBUG`` set to anything but empty/0/false: show tracebacks of expected errors."""
    return os.environ.get("MLATTACK_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


def _expected_types() -> tuple[type[BaseException], ...]:
    """Exception types that mean bad input rather than a bug. A library's exception can only have been raised
    once the library was imported, so its type is looked up among the loaded modules, never imported here: a typo
    on the command line must not pay for importing Lightning and MLflow just to be reported."""
    types: list[type[BaseException]] = [
        ArgumentError, ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError,
        EnvironmentFault,
    ]  # fmt: skip
    for module, name in (
        ("yaml", "YAMLError"),
        ("pytorch_lightning.utilities.exceptions", "MisconfigurationException"),
        ("lightning_fabric.utilities.exceptions", "MisconfigurationException"),
        ("mlflow.exceptions", "MlflowException"),
    ):
        found = getattr(sys.modules.get(module), name, None)
        if isinstance(found, type) and issubclass(found, BaseException):
            types.append(found)
    return tuple(types)


#: OSErrors that are the environment's state, not a bug: a folder one cannot write to, a full disk
_ENVIRONMENT_ERRNOS = {errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT}


def is_user_error(exc: BaseException) -> bool:
    """Whether ``exc`` is an expected mistake in the input or the environment (reported in one line) rather than
    a bug."""
    if isinstance(exc, OSError) and exc.errno in _ENVIRONMENT_ERRNOS:
        return True
    return isinstance(exc, _expected_types())


def _environment_message(exc: OSError) -> str | None:
    """One line for a folder that cannot be written or a full disk, naming the folder."""
    if exc.errno not in _ENVIRONMENT_ERRNOS:
        return None
    path = Path(exc.filename) if exc.filename else None
    folder = path if path is None or path.is_dir() else path.parent
    where = f"{folder}: " if folder is not None else ""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"{where}no space left on the device ({exc.strerror}); the work so far is kept"
    return (
        f"{where}cannot write here ({exc.strerror}); expected a folder mlattack may write to "
        "(--output_dir, --trainer.default_root_dir, or the tracking store's folder)"
    )


_WORKER = re.compile(r"Caught \w+ in DataLoader worker process \d+\.\s*Original Traceback", re.S)
_EXC_LINE = re.compile(
    r"^(?:[A-Za-z_][\w]*\.)*[A-Za-z_]\w*(?:Error|Exception|Unreachable|Warning): (?P<msg>.+)$"
)
_CLASS_REPR = re.compile(r"<class '(?:[\w]+\.)*(\w+)'>")
_PARSER_KEY = re.compile(r'^Parser key "(?P<key>[^"]+)":\s*(?P<rest>.*)$', re.S)


def _from_worker(text: str) -> str:
    """The original exception's message from PyTorch's re-raise of a DataLoader worker error."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    for ln in reversed(lines):
        m = _EXC_LINE.match(ln.strip())
        if m:
            return m.group("msg")
    return lines[-1].strip() if lines else text


def _split_top_level(text: str) -> list[str]:
    """``"dict[str, Any], NoneType"`` -> ``["dict[str, Any]", "NoneType"]`` (commas inside brackets kept)."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += {"[": 1, "]": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    return [*parts, text[start:].strip()]


def _from_parser(text: str) -> str:
    """jsonargparse's indented, sometimes nested message as ``<key>: <first reason>; expected ..., got ...``."""
    text = _CLASS_REPR.sub(r"\1", text).replace("typing.", "")
    m = _PARSER_KEY.match(text.strip())
    key, rest = (m.group("key"), m.group("rest")) if m else ("", text.strip())
    lines = [ln.strip().lstrip("- ").strip() for ln in rest.splitlines() if ln.strip()]
    given = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("Given value:")), None)
    subtypes = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("Subtypes:")), None)
    class_path = re.search(r"Problem with given class_path '([^']+)':\s*(.+)", rest)
    if class_path:
        lines = [f"cannot use class_path '{class_path.group(1)}' ({class_path.group(2).strip()})"]
    if given is not None and subtypes is not None:
        types = _split_top_level(subtypes[1:-1] if subtypes.startswith("[") else subtypes)
        reason = f"expected {' or '.join('null' if t == 'NoneType' else t for t in types)}, got {given!r}"
    else:
        seen: list[str] = []
        for ln in lines:  # nested parsers repeat the same reason with another prefix
            ln = _PARSER_KEY.sub(lambda g: g.group("rest"), ln).strip()
            if ln and ln not in seen and not ln.startswith(("Errors:", "Subtypes:", "Given value type:")):
                seen.append(ln)
        reason = "; ".join(seen[:2])
    argument = re.fullmatch(r"argument (?:-\w, )?--?([\w.]+): (.*)", reason)
    if argument:
        key, reason = argument.groups()
    typed = re.fullmatch(r"Expected an? (.+?)\. Got value: (.*)", reason)
    if typed:
        reason = f"expected {typed.group(1)}, got {typed.group(2)!r}"
    unknown = re.fullmatch(r"unrecognized arguments: (--?[\w.\-+]+)(.*)", reason)
    if unknown:
        key, reason = unknown.group(1).lstrip("-"), "unknown option"
    required = re.fullmatch(r"the following arguments are required: (.+)", reason)
    if required:
        key, reason = required.group(1), "required, not given"
    no_command = re.fullmatch(
        r'expected "([\w.]+)" to be one of \{(.*)\}, but it was not provided\.?', reason
    )
    if no_command:
        key = no_command.group(1).rpartition(".")[0]
        reason = f"give a subcommand: {', '.join(c.strip() for c in no_command.group(2).split(','))}"
    reason = reason[:1].lower() + reason[1:]
    return f"{key}: {reason}" if key and not reason.startswith(f"{key}:") else reason


def one_line(exc: BaseException) -> tuple[str, str | None]:
    """``(message, hint)`` of an expected error, the message on one line."""
    text = str(exc)
    hint = getattr(exc, "hint", None)
    if _WORKER.search(text):
        text = _from_worker(text)
    elif isinstance(exc, ArgumentError) or text.startswith("Parser key"):
        text = _from_parser(text)
    environment = _environment_message(exc) if isinstance(exc, OSError) else None
    if environment:
        text = environment
    elif isinstance(exc, FileNotFoundError) and exc.filename and str(exc.filename) not in text:
        text = f"{exc.filename}: {exc.strerror or text}"
    text = " ".join(text.split())
    mlflow_error = getattr(
        sys.modules.get("mlflow.exceptions"), "MlflowException", ()
    )  # raised only once imported
    if isinstance(exc, mlflow_error) and not text.lower().startswith("mlflow"):
        text = f"MLflow: {text}"
    return text or type(exc).__name__, hint


def format_error(exc: BaseException, prog: str = "mlattack") -> str:
    """The report of an expected error: ``<prog>: error: <message>`` plus an optional ``  hint: ...`` line."""
    message, hint = one_line(exc)
    out = f"{prog}: error: {message}"
    return out + (f"\n  hint: {hint}" if hint else "")


def closest(key: str, candidates: Iterable[str]) -> str | None:
    """The known option most like a mistyped ``key`` (``trainer.max_epoch`` -> ``trainer.max_epochs``), if any."""
    found = difflib.get_close_matches(key, list(candidates), n=1, cutoff=0.8)
    return found[0] if found else None


def device_error(option: str, value: object, error: BaseException) -> UserError:
    """Lightning's "no supported gpu backend" names no option: say which one, and what this machine takes."""
    return UserError(
        f"{option}: {value}: {error}",
        hint=f"this machine has no {value}: use {option} cpu, or auto (the best device present)",
    )
