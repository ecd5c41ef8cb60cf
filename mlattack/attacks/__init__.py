"""mlattack.attacks: one attack per file; see base.py for the contract."""

from mlattack.attacks.apgd import APGD
from mlattack.attacks.base import Attack, AttackResult
from mlattack.attacks.bim import BIM
from mlattack.attacks.fgm import FGM
from mlattack.attacks.fgsm import FGSM
from mlattack.attacks.graph_pgd import LabelGraphPGD
from mlattack.attacks.mifgsm import MIFGSM
from mlattack.attacks.mlalp import MLALP
from mlattack.attacks.mlcw import MLCW
from mlattack.attacks.mldp import MLDP
from mlattack.attacks.pgd import PGD
from mlattack.attacks.slide import SLIDE

__all__ = [
    "APGD",
    "Attack",
    "AttackResult",
    "BIM",
    "FGM",
    "FGSM",
    "LabelGraphPGD",
    "MIFGSM",
    "MLALP",
    "MLCW",
    "MLDP",
    "PGD",
    "SLIDE",
]
