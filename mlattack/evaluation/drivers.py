"""What paper mode takes from the study's driver for the attacked model and dataset: judging, selection, N.

The study (``MiLab-HITSZ/2022ChenEmpiricalMLAE``) has one driver script per victim and dataset, ``src/demo_<model>_
<dataset>.py``, and they do not agree with each other. Each selects the first correctly predicted test samples with
a minimum number of positive labels, up to a cap (``gen_adv_file``), and judges the adversarial arrays its attack
saved as float ``.npy`` files (``src/attack_model.py``: ``np.save`` of the float images). Only the ML-GCN VOC2007
driver truncates them to 8 bits first, in memory (``Image.fromarray(np.uint8(img * 255))`` then ``/ 255``). Paper
mode follows the driver of the (network, dataset) pair it attacks; explicit ``num_samples``, ``min_positive`` and
``quantize`` arguments override it. Pairs the study has no driver for get the values of :func:`paper_driver`'s
fallback rule, stated there and in docs/PROTOCOL.md.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Driver:
    """The settings one study driver ran with (or mlattack's choice where the study has no driver)."""

    name: str  # the driver script, or "none" with the rule that chose the values
    quantize: str  # "floor": uint8(x * 255) / 255 before judging; "none": the float images
    min_positive: int  # least number of positive ground-truth labels of a selected sample
    num_samples: int  # the driver's cap on the selection (N)

    @property
    def study(self) -> bool:
        """Whether the study's code has this driver (else the values are mlattack's choice)."""
        return not self.name.startswith("none")


_SRC = "MiLab-HITSZ/2022ChenEmpiricalMLAE src/"
#: The four drivers of the study's code, keyed by (network class name, lower case; data source). Lines cite HEAD of
#: the reference repository; tests/evaluation/test_drivers.py holds the same facts as independent expectations.
STUDY_DRIVERS: dict[tuple[str, str], Driver] = {
    # selection `np.sum(y[i]) >= 1 and count < 1000` (l. 143); judged after np.uint8(img * 255) (l. 209-220)
    ("mlgcn", "voc2007"): Driver(_SRC + "demo_mlgcn_voc2007.py", "floor", 1, 1000),
    # selection `>= 1 and count < 1000` (l. 147); evaluate_adv_ judges the loaded float arrays (l. 201-290)
    ("mlgcn", "voc2012"): Driver(_SRC + "demo_mlgcn_voc2012.py", "none", 1, 1000),
    # selection `>= 2 and count>=0 and count<=49` (l. 145): 50 samples; float arrays judged (l. 203-262)
    ("mlliw", "voc2007"): Driver(_SRC + "demo_mlliw_voc2007.py", "none", 2, 50),
    # selection `>= 2 and count < 1000` (l. 140); float arrays judged (l. 194-248)
    ("mlliw", "voc2012"): Driver(_SRC + "demo_mlliw_voc2012.py", "none", 2, 1000),
}

#: Where the study has no driver (NUS-WIDE, COCO, the built-in data, other networks): follow the network's study
#: drivers where they agree (ML-LIW: float images, >= 2 positive labels), else judge 8-bit images (ML-GCN's two
#: drivers disagree; an image an attacker delivers is 8-bit, and the truncation is the only judging step the study's
#: code spells out) with >= 1 positive label, as the ML-GCN drivers. N: 1000, every driver's cap but one.
_FALLBACK = {
    "mlliw": Driver("none: as both ML-LIW drivers (float images, >= 2 positive labels)", "none", 2, 1000),
}
_DEFAULT = Driver("none: mlattack's choice (8-bit images, >= 1 positive label, N 1000)", "floor", 1, 1000)


def paper_driver(network: str, source: str) -> Driver:
    """The driver paper mode follows for ``network`` (the attacked module's class name, any case) on ``source``."""
    net = network.lower()
    return STUDY_DRIVERS.get((net, source), _FALLBACK.get(net, _DEFAULT))
