"""Reading a Lightning checkpoint with errors that say what the file is and what was expected.

torch's own errors for a bad file are about its internals (``EOFError``, ``KeyError: 101``, "failed finding central
directory", "invalid load key"); a user needs to hear "empty", "truncated", "not a checkpoint" or "refused", with
the path. Checkpoints are always read with ``weights_only=True``: nothing stored in them can run code.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

#: what ``torch.save`` writes: a zip archive
ZIP_MAGIC = b"PK\x03\x04"
EXPECTED = "expected a checkpoint written by `mlattack fit` (a PyTorch Lightning .ckpt file)"


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message names the file, what it is and what was expected."""


def _refused_global(e: Exception) -> str | None:
    """The line of torch's weights-only error that names a refused object (a pickle payload), if that is what it
    is; other unpickling failures (random bytes: "Unsupported operand ...") are not refusals but damage."""
    lines = [line.strip() for line in str(e).splitlines() if "Unsupported global" in line]
    return lines[0][:300] if lines else None


def read_checkpoint_bytes(path: str | Path) -> tuple[bytes, dict]:
    """The raw bytes of a Lightning checkpoint and its loaded content, or a clear error.

    Raises FileNotFoundError (no such file) or :class:`CheckpointError` (a folder, empty, truncated, not a PyTorch
    file, a pickle payload refused by ``weights_only``, or a PyTorch file without a ``state_dict``).
    """
    import torch

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"checkpoint {p}: no such file; {EXPECTED}")
    if p.is_dir():
        raise CheckpointError(f"checkpoint {p}: a folder; {EXPECTED}")
    data = p.read_bytes()
    if not data:
        raise CheckpointError(
            f"checkpoint {p}: empty file (0 bytes), e.g. a save cut short by a crash or a full disk; {EXPECTED}"
        )
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for a bad file; each becomes one clear error
        refused = _refused_global(e) if isinstance(e, pickle.UnpicklingError) else None
        if refused is not None:
            raise CheckpointError(
                f"checkpoint {p}: refused, it holds objects other than tensors and plain containers (checkpoints "
                f"are loaded with weights_only=True, so no code in them runs): {refused}"
            ) from e
        if data.startswith(ZIP_MAGIC):
            raise CheckpointError(
                f"checkpoint {p}: truncated or corrupt ({len(data)} bytes): it starts like the zip archive torch "
                f"writes but does not read back ({type(e).__name__}: {str(e)[:120]}); {EXPECTED}"
            ) from e
        raise CheckpointError(
            f"checkpoint {p}: not a PyTorch checkpoint ({len(data)} bytes starting {data[:8]!r}; torch writes a zip "
            f"archive starting {ZIP_MAGIC!r}); {EXPECTED}"
        ) from e
    if not isinstance(obj, dict) or not isinstance(obj.get("state_dict"), dict):
        keys = sorted(map(str, obj))[:8] if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(
            f"checkpoint {p}: a PyTorch file, but not a Lightning checkpoint (no 'state_dict'; found {keys}); "
            f"{EXPECTED}"
        )
    return data, obj


def read_checkpoint(path: str | Path) -> dict:
    """The loaded content of a Lightning checkpoint (see :func:`read_checkpoint_bytes`)."""
    return read_checkpoint_bytes(path)[1]
