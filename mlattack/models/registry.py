"""Moved to :mod:`mlattack.tracking.registry` (MLflow code lives under ``tracking/``); this alias keeps imports
that still name the old module working until they are updated, and is then to be deleted."""

from mlattack.tracking.registry import *  # noqa: F403
from mlattack.tracking.registry import __all__  # noqa: F401
