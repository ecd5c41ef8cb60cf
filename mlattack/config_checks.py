"""Config values are checked before anything in them is imported: a YAML alias that contains itself would recurse
without end, and importing the module a ``class_path`` names runs that module's top-level code. Used by the command
line (files and option values) and by attack specs (configs read by ``mlattack attack``), before any parser or
``import_module`` sees them."""

from __future__ import annotations

import sys

from mlattack.errors import UserError

#: where a config's ``class_path`` may point before the class is known to be what the option takes: mlattack,
#: torch (optimisers, schedulers) and Lightning (callbacks, loggers); modules the process already imported too
IMPORTABLE = ("mlattack.", "torch.", "pytorch_lightning.", "lightning.", "lightning_fabric.")


def _walk(node: object, where: str, seen: tuple[int, ...] = ()) -> None:
    """Refuse a YAML alias that contains itself and a ``class_path`` outside :data:`IMPORTABLE` (before any import:
    importing a module runs its top-level code)."""
    if isinstance(node, (dict, list)):
        if id(node) in seen:
            raise UserError(f"{where}: a YAML alias refers to itself (a loop); expected plain, finite values")
        seen = (*seen, id(node))
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in items:
            if key == "class_path" and isinstance(value, str):
                check_class_path(value, where)
            _walk(value, where, seen)


def check_class_path(class_path: str, where: str) -> None:
    """``class_path`` may be imported: it is from :data:`IMPORTABLE`, already imported, or a bare class name."""
    module = class_path.rpartition(".")[0]
    if module and not (class_path.startswith(IMPORTABLE) or module in sys.modules):
        raise UserError(
            f"{where}: class_path {class_path!r} is not from mlattack, torch or Lightning; refusing to import it "
            "(importing a module runs its code)",
            hint="attacks are mlattack.attacks.<Name>, networks mlattack.models.<module>.<Class>",
        )


def check_config_value(value: object, where: str) -> None:
    """A loaded config value: no alias loop, no ``class_path`` outside :data:`IMPORTABLE` (see :func:`_walk`)."""
    _walk(value, where)


def check_config_text(text: str, where: str) -> object:
    """Load a YAML text (a config file, an option's value) and check it with :func:`_walk`; returns it."""
    import yaml

    loaded = yaml.safe_load(text)
    _walk(loaded, where)
    return loaded
