"""A network as files without pickle: its weights (``network.pt``, a plain state dict read with
``weights_only=True``) and how to build it (``network.json``: class path and constructor arguments).

Loading builds the network from the JSON and copies the weights in, so a tampered file can at worst give wrong
weights, never run code: the class must be an ``nn.Module`` from mlattack (or from a module the process has
imported already, e.g. a test's), the arguments plain JSON values, and torch refuses anything but tensors and
plain containers in the weights file. The config is checked when the files are written: the rebuilt network
must reproduce the saved one's weights digest.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import inspect
import itertools
import json
import pickle
import sys
from pathlib import Path

import torch
from torch import nn

FORMAT = "mlattack-network/1"
WEIGHTS, CONFIG = "network.pt", "network.json"
TRUSTED_PACKAGES = ("mlattack.",)


def weights_digest(net: nn.Module) -> str:
    """What the network computes with: its class and every parameter and buffer (name, dtype, shape, bytes).

    Two networks with equal digests give equal outputs; a model re-registered under a reused name/version, or a
    checkpoint file replaced in place, gets a new digest. Used in the attack runs' keys (identity by content).
    """
    h = hashlib.sha256(f"{type(net).__module__}.{type(net).__qualname__}".encode())
    for name, t in itertools.chain(net.named_parameters(), net.named_buffers()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


class UntrustedNetwork(ValueError):
    """A network config that names a class this loader will not build."""


def _plain(value: object) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    return isinstance(value, dict) and all(isinstance(k, str) and _plain(v) for k, v in value.items())


def _library_module(module_name: str) -> bool:
    """Whether an imported module belongs to an installed library or the standard library (torch.nn, ...)."""
    import sysconfig

    path = getattr(sys.modules.get(module_name), "__file__", None)
    if module_name.split(".")[0] in sys.builtin_module_names or path is None:
        return True
    roots = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    return any(Path(path).resolve().is_relative_to(Path(r).resolve()) for r in roots)


def network_class(class_path: str) -> type[nn.Module]:
    """The ``nn.Module`` class named by ``class_path``, if it is one this loader builds (see module docstring):
    mlattack's, or one from a module already imported that is not an installed library's (a ``torch.nn.Linear``
    is no mlattack network, however its weights match)."""
    module_name, _, name = str(class_path).rpartition(".")
    if not module_name or not (
        module_name.startswith(TRUSTED_PACKAGES)
        or (module_name in sys.modules and not _library_module(module_name))
    ):
        raise UntrustedNetwork(
            f"network class {class_path!r} is not an mlattack network (from mlattack, or from a module of the "
            "user's own already imported); refusing to build it"
        )
    cls = getattr(importlib.import_module(module_name), name, None)
    if not (inspect.isclass(cls) and issubclass(cls, nn.Module)):
        raise UntrustedNetwork(f"{class_path!r} is not a torch.nn.Module class")
    return cls


def build(config: dict) -> nn.Module:
    """The network a ``{"class_path", "init_args"}`` config describes (plain arguments only)."""
    if not isinstance(config, dict) or not isinstance(config.get("class_path"), str):
        raise UntrustedNetwork(f"network config must be a mapping with `class_path`, got {config!r}"[:300])
    init_args = config.get("init_args") or {}
    if not _plain(init_args) or not isinstance(init_args, dict):
        raise UntrustedNetwork("network init_args must be plain JSON values")
    return network_class(config["class_path"])(**init_args)


def constructor_config(obj: object) -> dict:
    """``{"class_path", "init_args"}`` of an object built by hand (a network, an attack): its constructor's
    arguments read back from the attributes of the same name (plain values only)."""
    cls = type(obj)
    args = {}
    for p in list(inspect.signature(cls.__init__).parameters.values())[1:]:
        if p.kind not in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            continue
        if hasattr(obj, p.name) and _plain(getattr(obj, p.name)):
            args[p.name] = getattr(obj, p.name)
    return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": args}


def _weights(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone().contiguous() for k, v in net.state_dict().items()}


def _rebuilds(config: dict, net: nn.Module) -> bool:
    try:
        other = build(config)
        other.load_state_dict(_weights(net), strict=True)
    except Exception:  # noqa: BLE001 - any failure means "this config does not make this network"
        return False
    return weights_digest(other) == weights_digest(net)


def portable_config(net: nn.Module, config: dict | None) -> dict:
    """The config to store: ``config`` (or one derived from ``net``), with file-path arguments dropped when the
    network rebuilds without them (their content is in the weights), checked to reproduce the weights digest."""
    config = copy.deepcopy(config) if config is not None else constructor_config(net)
    args = config.get("init_args") or {}
    files = {
        k for k, v in args.items() if isinstance(v, str) and ("/" in v or "\\" in v) and Path(v).exists()
    }
    lean = {**config, "init_args": {k: (None if k in files else v) for k, v in args.items()}}
    for candidate in (lean, config) if files else (config,):
        if _rebuilds(candidate, net):
            return candidate
    raise ValueError(
        f"{type(net).__name__} cannot be stored without pickle: the config {json.dumps(config)[:300]} does not "
        "rebuild a network with these weights (give the network's class_path/init_args config)"
    )


def save(net: nn.Module, folder: Path, config: dict, extra: dict | None = None) -> None:
    """``network.pt`` and ``network.json`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(_weights(net), folder / WEIGHTS)
    (folder / CONFIG).write_text(json.dumps({"format": FORMAT, **config, **(extra or {})}, indent=2))


def load(folder: Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """Build the network from ``network.json`` and load ``network.pt`` with ``weights_only=True``."""
    meta = json.loads((folder / CONFIG).read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{folder / CONFIG}: not an {FORMAT} file (format {meta.get('format')!r})")
    net = build({"class_path": meta.get("class_path"), "init_args": meta.get("init_args")})
    try:
        state = torch.load(folder / WEIGHTS, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if "Unsupported" in ln] or [str(e)[:200]]
        raise UntrustedNetwork(
            f"{WEIGHTS} refused: it holds objects other than tensors and plain containers (read with "
            f"weights_only=True, so nothing in it ran): {lines[0][:300]}"
        ) from None
    net.load_state_dict(state, strict=True)
    return net.to(map_location).eval()


def is_network_folder(folder: Path) -> bool:
    return (folder / CONFIG).is_file() and (folder / WEIGHTS).is_file()
