"""Models, samples and the memory probe of ``loop_speed.py`` (kept apart so that the loops read in one screen)."""

from __future__ import annotations

import ctypes
import re
import resource
import time
from pathlib import Path

import torch
import torchvision
from torch import nn


def resnet(depth: int, num_classes: int) -> nn.Module:
    """torchvision ResNet with random weights (nothing downloaded) and a C-logit head."""
    torch.manual_seed(0)
    return getattr(torchvision.models, f"resnet{depth}")(weights=None, num_classes=num_classes).eval()


def random_samples(model: nn.Module, n: int, size: int, device: str, batch: int = 8):
    """Uniform-noise images whose clean prediction shows >= 1 label; that prediction is their ground truth."""
    gen = torch.Generator().manual_seed(1)
    xs, ys = [], []
    while sum(len(x) for x in xs) < n:
        x = torch.rand(batch, 3, size, size, generator=gen).to(device)
        with torch.no_grad():
            pred = (model(x) >= 0).float()
        keep = pred.sum(1) > 0
        xs.append(x[keep])
        ys.append(pred[keep])
    return torch.cat(xs)[:n], torch.cat(ys)[:n]


def demo_model(checkpoint: str | None, samples: int, device: str, epochs: int = 6, train_size: int = 2000):
    """The demo ML-GCN (tiny trunk, 64²) and its first correctly predicted test samples. ``checkpoint``: a
    ``models:/`` URI, or a ``.pt`` state dict; without one it is trained here (slow on 2 cores)."""
    from mlattack.data.stats import compute_label_stats
    from mlattack.data.synthetic import SyntheticMultiLabel
    from mlattack.models.mlgcn import MLGCN

    def stack(ds, n):
        items = [ds[i] for i in range(min(n, len(ds)))]
        return torch.stack([i["image"] for i in items]), torch.stack([i["target"] for i in items]).float()

    if checkpoint and not checkpoint.endswith(".pt"):
        from mlattack.tracking.registry import load_network

        net = load_network(checkpoint)
    else:
        train = SyntheticMultiLabel(split="train", image_size=64, num_samples=train_size)
        torch.manual_seed(0)
        net = MLGCN(num_classes=20, backbone="tiny", hidden_dim=256)
        stats = compute_label_stats(train)
        net.set_label_graph(stats.cooccurrence_matrix(), stats.label_counts())
        if checkpoint and Path(checkpoint).exists():
            net.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
        else:
            start = time.perf_counter()
            x, y = (v.to(device) for v in stack(train, train_size))
            net = net.to(device)
            opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
            net.train()
            for _ in range(epochs):
                for idx in torch.randperm(len(x), device=x.device).split(32):
                    loss = nn.functional.multilabel_soft_margin_loss(net(x[idx]), y[idx])
                    opt.zero_grad()
                    loss.backward()
                    nn.utils.clip_grad_norm_(net.parameters(), 10.0)
                    opt.step()
            print(f"demo model: trained {epochs} epochs in {time.perf_counter() - start:.0f} s")
            if checkpoint:
                torch.save({k: v.cpu() for k, v in net.state_dict().items()}, checkpoint)
    net = net.eval().to(device)
    x, y = stack(SyntheticMultiLabel(split="test", image_size=64), 4 * samples)
    with torch.no_grad():
        pred = torch.cat([(net(b.to(device)) >= 0).float().cpu() for b in x.split(64)])
    keep = ((pred == y).all(1) & (y.sum(1) > 0)).nonzero().flatten()[:samples]
    print(f"demo model: {len(keep)} correctly predicted test samples (of {len(x)} scanned)")
    if len(keep) < samples:  # a weak model (a short training run): its predictions stand in for the truth
        taken = set(keep.tolist())
        extra = sorted(
            range(len(x)), key=lambda i: (i in taken, -float(pred[i].sum()), i)
        )  # labelled ones first
        keep = torch.cat([keep, torch.tensor(extra[: samples - len(keep)], dtype=torch.long)])
        y = pred  # equal to the truth on the correctly predicted rows
        print(f"demo model: weak; {len(keep)} samples, the model's prediction taken as their truth")
    return net, x[keep].to(device), y[keep].to(device)


class Probabilities(nn.Module):
    """The study's victims returned sigmoid probabilities, and its attack loss took them."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(x))


def study_loss(p: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The study's attack loss: BCE on probabilities clamped to [1e-6, 1 - 1e-6], summed over the batch."""
    p = p.clamp(1e-6, 1 - 1e-6)
    return -(target * p.log() + (1 - target) * (1 - p).log()).sum()


def advertorch_attack(name: str, model: nn.Module, eps: float, nb_iter: int, eps_iter: float):
    """The real AdverTorch 0.2.3 attack ``name`` (FGSM, BIM, PGD, MIFGSM) as the study configured it."""
    from tests.attacks.advertorch_compat import attacks as advertorch

    common = {
        "loss_fn": study_loss,
        "eps": eps,
        "clip_min": 0.0,
        "clip_max": 1.0,
        "targeted": True,
    }
    if name == "FGSM":
        return advertorch.GradientSignAttack(model, **common)
    cls = {
        "BIM": advertorch.LinfBasicIterativeAttack,
        "PGD": advertorch.PGDAttack,  # the study's class: L-inf with a random start by default
        "MIFGSM": advertorch.MomentumIterativeAttack,
    }[name]
    kw = {"decay_factor": 1.0} if name == "MIFGSM" else {}
    return cls(model, nb_iter=nb_iter, eps_iter=eps_iter, **common, **kw)


class PeakMemory:
    """Peak memory of a block above what was in use when it started, in MiB.

    CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` (tensors only). CPU: the
    process's resident-set high-water mark ``VmHWM``, reset by writing 5 to ``/proc/self/clear_refs`` (Linux >= 4.0)
    after ``malloc_trim`` has returned freed heap to the OS, minus the RSS at the block's start (so it includes
    heap fragmentation and oneDNN's caches); where that reset is refused, ``getrusage``'s ``ru_maxrss``
    (a process-lifetime high-water mark: only growth beyond earlier blocks shows). ``kind`` says which.
    """

    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda")
        self.kind = "cuda max_memory_allocated" if self.cuda else "RSS high-water (VmHWM, reset per loop)"
        self.mib = float("nan")

    def __enter__(self) -> PeakMemory:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
            return self
        try:
            # freed blocks go back to the OS first, or a loop reusing an earlier loop's freed heap shows no growth
            ctypes.CDLL("libc.so.6").malloc_trim(0)
            Path("/proc/self/clear_refs").write_text("5")
            self.base = _status_kib("VmRSS")
        except OSError:
            self.kind = "ru_maxrss (process lifetime)"
            self.base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return self

    def __exit__(self, *exc) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            self.mib = (torch.cuda.max_memory_allocated() - self.base) / 2**20
        elif self.kind.startswith("RSS"):
            self.mib = (_status_kib("VmHWM") - self.base) / 1024
        else:
            self.mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - self.base) / 1024


def _status_kib(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+)\s+kB", text, re.M).group(1))
