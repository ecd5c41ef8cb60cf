"""README's "Use the attacks on your own model" snippet runs as printed (it defines everything it uses)."""

import re
import textwrap
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


def add_an_attack_snippet() -> str:
    section = README.read_text().split("## Add an attack", 1)[1].split("\n## ", 1)[0]
    return textwrap.dedent(re.search(r"```python\n(.*?)```", section, re.S).group(1))


def test_an_attack_added_the_readme_way_gets_fast_mode():
    """A new attack written as README's "Add an attack" shows runs continuously in fast mode, and each sample's result
    equals attacking it alone (the scheduler changes the batch layout, not the result)."""
    from mlattack.evaluation.chunks import attack_chunk, runs_continuously
    from mlattack.tracking.record import attack_params
    from tests.attacks.models import make_images, make_linear

    names: dict = {"__name__": "readme_attack"}
    exec(compile(add_an_attack_snippet(), "README.md", "exec"), names)  # noqa: S102 - the README's own code
    attack = names["L2BIM"](eps=1.0, nb_iter=5, eps_iter=0.3, early_stop=True)
    assert runs_continuously(attack, fast=True) and not runs_continuously(attack, fast=False)
    assert attack_params(attack.hyperparameters(), attack.norm)["attack.norm"] == "l2"
    model, images, target = make_linear(5, 8), make_images(6, 8, seed=1), torch.ones(6, 5)
    res, errors = attack_chunk("L2BIM", attack, model, images, target, [0, 1, 2, 3, 4, 5], 7, 2, fast=True)
    assert errors == [""] * 6
    for i in range(6):
        one = attack.run(model, images[i : i + 1], target[i : i + 1], diagnostics=False)
        torch.testing.assert_close(res.adv[i : i + 1], one.adv, atol=1e-6, rtol=0)
        assert int(res.iterations[i]) == int(one.iterations[0])
    assert ((res.adv - images).flatten(1).norm(dim=1) <= 1.0 + 1e-5).all()
