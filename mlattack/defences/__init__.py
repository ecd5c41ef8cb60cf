"""Preprocessing defences as model wrappers, with the adaptive (BPDA/EOT) model that attacks them honestly."""

from mlattack.defences.preprocessing import JPEG, BitDepth, MedianSmoothing, Preprocessing
from mlattack.defences.wrapper import AdaptiveAttackModel, Defended, StraightThrough

__all__ = [
    "JPEG",
    "AdaptiveAttackModel",
    "BitDepth",
    "Defended",
    "MedianSmoothing",
    "Preprocessing",
    "StraightThrough",
]
