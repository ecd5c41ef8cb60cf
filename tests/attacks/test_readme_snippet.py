"""README's "Use the attacks on your own model" snippet runs as printed (it defines everything it uses)."""

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[2] / "README.md"


def own_model_snippet() -> str:
    section = README.read_text().split("## Use the attacks on your own model", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_own_model_snippet_runs_and_attacks():
    torch.manual_seed(0)
    names: dict = {}
    exec(compile(own_model_snippet(), "README.md", "exec"), names)  # noqa: S102 - the README's own code
    images, adversarial = names["images"], names["adversarial"]
    assert adversarial.shape == images.shape and 0 <= adversarial.min() and adversarial.max() <= 1
    assert (adversarial - images).abs().max() <= 0.03 + 1e-6  # PGD's L-inf budget
    assert names["shown"].shape == (len(images),)
