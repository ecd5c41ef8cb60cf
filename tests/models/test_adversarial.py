"""Adversarial training (model.adversarial): the step trains on the inner attack's images, parameter gradients come
from the training loss alone, the TRADES loss has its closed-form value, the option parses from attack configs, and
an adversarial fit resumes like an ordinary one (same weights as an uninterrupted fit, settings in the registry)."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import mlflow
import pytest
import pytorch_lightning as pl
import torch
from scipy.special import rel_entr
from torch import nn
from torch.utils.data import DataLoader

from mlattack.attacks import APGD, BIM, PGD
from mlattack.cli import lightning_main
from mlattack.models.adversarial import AdversarialTraining, bernoulli_kl
from mlattack.models.module import MultiLabelClassifier
from tests.models.test_fit import tiny_args


class SmallNet(nn.Module):
    """Conv + BatchNorm + linear head: nonlinear, and with running statistics the attack must not move."""

    num_classes = 5

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.head = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).mean(dim=(2, 3)))


def batch(n: int = 6) -> dict:
    g = torch.Generator().manual_seed(2)
    target = (torch.rand(n, 5, generator=g) > 0.6).float()
    return {
        "image": torch.rand(n, 3, 8, 8, generator=g),
        "target": target,
        "difficult": torch.zeros_like(target),
    }


def module(**kw) -> MultiLabelClassifier:
    attack = BIM(eps=0.05, nb_iter=3, eps_iter=0.02)  # deterministic: its images can be recomputed
    return MultiLabelClassifier(SmallNet(), adversarial=AdversarialTraining(attack, **kw)).train()


def test_pgd_at_trains_on_the_attacks_images_and_grads_come_from_the_training_loss_only():
    m, b = module(), batch()
    reference = copy.deepcopy(m.net)
    stats = m.net.body[1].running_mean.clone()
    expected_adv = BIM(eps=0.05, nb_iter=3, eps_iter=0.02)(reference, b["image"], torch.ones(6, 5))
    parts = m.adversarial.loss(m, b)
    # the attack left no parameter gradient and no BatchNorm statistic behind (eval mode, frozen parameters) ...
    assert all(p.grad is None for p in m.parameters())
    assert m.net.training and all(p.requires_grad for p in m.parameters())
    reference.train()
    expected = nn.MultiLabelSoftMarginLoss()(reference(expected_adv), b["target"])
    assert torch.allclose(parts["loss"], expected, atol=1e-6)
    # ... and the adversarial images differ from the clean ones, so this is not the clean loss
    assert not torch.allclose(
        expected, nn.MultiLabelSoftMarginLoss()(copy.deepcopy(reference)(b["image"]), b["target"])
    )
    # the one training forward updated the running mean exactly as the reference's one forward did
    assert not torch.equal(stats, m.net.body[1].running_mean)
    assert torch.allclose(m.net.body[1].running_mean, reference.body[1].running_mean)
    parts["loss"].backward()
    expected.backward()
    for p, q in zip(m.net.parameters(), reference.parameters(), strict=True):
        assert torch.allclose(p.grad, q.grad, atol=1e-6)


def test_mixed_pgd_at_weights_clean_and_adversarial_losses():
    m, b = module(adversarial_weight=0.25), batch()
    parts = m.adversarial.loss(m, b)
    assert torch.allclose(parts["loss"], 0.75 * parts["clean"] + 0.25 * parts["adversarial"])


def test_bernoulli_kl_matches_scipy_and_is_zero_on_equal_logits():
    a = torch.tensor([[0.0, 2.0, -3.0, 8.0]])
    b = torch.tensor([[1.0986123, -1.0, -3.0, -8.0]])  # log 3: q = 0.75
    p, q = torch.sigmoid(a).double().numpy(), torch.sigmoid(b).double().numpy()
    oracle = rel_entr(p, q) + rel_entr(1 - p, 1 - q)
    assert torch.allclose(bernoulli_kl(a, b).double(), torch.from_numpy(oracle), rtol=1e-5)
    assert abs(float(bernoulli_kl(a, b)[0, 0]) - 0.5 * float(torch.log(torch.tensor(4 / 3)))) < 1e-6
    assert float(bernoulli_kl(a, a).abs().max()) < 1e-7
    assert torch.isfinite(bernoulli_kl(torch.tensor([[60.0]]), torch.tensor([[-60.0]]))).all()


def test_trades_loss_is_clean_loss_plus_beta_times_mean_label_kl():
    m, b = module(objective="trades", beta=4.0), batch()
    reference = copy.deepcopy(m.net)
    adv = BIM(eps=0.05, nb_iter=3, eps_iter=0.02)(reference, b["image"], torch.ones(6, 5))
    parts = m.adversarial.loss(m, b)
    logits = reference.train()(torch.cat([b["image"], adv]))
    clean, advl = logits[:6], logits[6:]
    p, q = torch.sigmoid(clean).double().detach().numpy(), torch.sigmoid(advl).double().detach().numpy()
    kl = float((rel_entr(p, q) + rel_entr(1 - p, 1 - q)).mean())
    expected = float(nn.MultiLabelSoftMarginLoss()(clean, b["target"]).detach()) + 4.0 * kl
    assert abs(float(parts["loss"]) - expected) < 1e-5
    assert abs(float(parts["divergence"]) - kl) < 1e-6 and kl > 0


def test_bad_settings_are_refused_by_name():
    with pytest.raises(ValueError, match="objective"):
        AdversarialTraining(PGD(eps=0.03), objective="fgsm")
    with pytest.raises(ValueError, match="adversarial_weight"):
        AdversarialTraining(PGD(eps=0.03), adversarial_weight=0.0)
    with pytest.raises(ValueError, match="attack"):
        AdversarialTraining("pgd")


def test_the_option_parses_from_an_attack_config(tmp_path):
    cli = lightning_main(
        tiny_args(
            tmp_path,
            "mlgcn",
            extra=[
                "--model.adversarial",
                "configs/adversarial/trades.yaml",
                "--model.adversarial.init_args.attack",
                "configs/attack/apgd.yaml",
                "--model.adversarial.init_args.beta",
                "2.5",
            ],
        )[1:],  # fmt: skip
        run=False,
    )
    adv = cli.model.adversarial
    assert isinstance(adv, AdversarialTraining) and adv.objective == "trades" and adv.beta == 2.5
    assert isinstance(adv.attack, APGD) and adv.attack.eps == 0.3
    tags = cli.model.registry_tags()
    assert (
        tags["mlattack.adversarial.objective"] == "trades"
        and tags["mlattack.adversarial.attack.attack"] == "APGD"
    )
    plain = lightning_main(tiny_args(tmp_path, "mlgcn")[1:], run=False)
    assert plain.model.adversarial is None and plain.model.registry_tags() == {}


ADV = [
    "--model.adversarial",
    "configs/adversarial/pgd-at.yaml",
    "--model.adversarial.init_args.attack.init_args.nb_iter",
    "2",
]


def test_adversarial_fit_resumes_to_the_uninterrupted_weights_and_registers_its_settings(
    tmp_path, monkeypatch
):
    def fit(folder: Path, epochs: int, extra=()):
        uri = f"sqlite:///{folder / 'mlflow.db'}"
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        return lightning_main(tiny_args(folder, "mlgcn", epochs=epochs, extra=[*ADV, *extra])), uri

    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    whole, uri = fit(tmp_path / "a", 2)
    first, _ = fit(tmp_path / "b", 1)
    last = first.trainer.checkpoint_callback.last_model_path
    resumed, uri_b = fit(tmp_path / "b", 2, ["--ckpt_path", last])
    for p, q in zip(
        whole.model.net.state_dict().values(), resumed.model.net.state_dict().values(), strict=True
    ):
        assert torch.equal(p, q)
    client = mlflow.MlflowClient(uri_b)
    runs = client.search_runs([client.get_experiment_by_name("mlattack").experiment_id])
    assert len(runs) == 1  # resumed into the same run
    run = runs[0]
    assert run.data.params["adversarial/attack"] == "mlattack.attacks.PGD"
    assert (
        run.data.params["adversarial/attack/eps"] == "0.03" and "train/adversarial_loss" in run.data.metrics
    )
    version = client.get_model_version_by_alias("mlgcn-synthetic", "best")
    assert version.tags["mlattack.adversarial.attack.eps"] == "0.03"
    assert version.tags["mlattack.adversarial.attack.nb_iter"] == "2"


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_adversarial_fit_runs_under_mixed_precision_on_cpu(precision):
    """Lightning runs "16-mixed" on a CPU as bf16: the inner attack's passes and the training pass run in the
    autocast dtype, the weights move and stay finite."""
    m, dtypes = module(), set()
    m.net.body[0].register_forward_hook(lambda _m, _i, out: dtypes.add(out.dtype))
    before = copy.deepcopy(m.net.state_dict())
    trainer = pl.Trainer(accelerator="cpu", precision=precision, max_epochs=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)  # fmt: skip
    trainer.fit(m, train_dataloaders=DataLoader([batch() for _ in range(3)], batch_size=None))
    assert dtypes == {torch.bfloat16}
    after = m.net.state_dict()
    assert all(torch.isfinite(v).all() for v in after.values() if v.is_floating_point())
    assert not torch.equal(before["head.weight"], after["head.weight"])
    assert math.isfinite(float(trainer.callback_metrics["train/adversarial_loss"]))
