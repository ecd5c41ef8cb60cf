"""Pictures and tables for attack runs: the clean | adversarial | perturbation panel and the success table."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # headless: figures are written to files / MLflow, never shown

import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402


def amplify(r: torch.Tensor) -> torch.Tensor:
    """Map a perturbation to [0,1] for display: 0.5 + r / (2 max|r|) (grey = unchanged)."""
    m = r.abs().max().clamp(min=1e-12)
    return (0.5 + r / (2 * m)).clamp(0, 1)


def _wrap(names: list[str], width: int = 34) -> str:
    text, line = [], ""
    for n in names or ["(none)"]:
        if len(line) + len(n) + 2 > width and line:
            text.append(line)
            line = ""
        line = f"{line}, {n}" if line else n
    text.append(line)
    return "\n".join(text)


def attack_panel(samples: list[dict], title: str = "") -> plt.Figure:
    """One row per sample: clean image (true labels), adversarial image (labels shown), amplified r."""
    n = max(len(samples), 1)
    fig, axes = plt.subplots(n, 3, figsize=(9, 3.3 * n), squeeze=False)
    for row, s in enumerate(samples):
        clean, adv = s["clean"].float(), s["adv"].float()
        pics = [clean, adv, amplify(adv - clean)]
        linf = float((adv - clean).abs().max())
        heads = [
            f"clean: {len(s['before'])} labels\n{_wrap(s['before'])}",
            f"adversarial: {len(s['after'])} labels\n{_wrap(s['after'])}",
            f"perturbation (amplified)\nmax |r| = {linf:.4f}",
        ]
        for col in range(3):
            ax = axes[row][col]
            ax.imshow(pics[col].permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
            ax.set_title(heads[col], fontsize=7)
            ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def success_table_markdown(rows: dict[str, dict[str, float]], num_scenarios: int = 8) -> str:
    """Attacks × scenarios (percent), in the layout of the study's tables."""
    head = "| attack | N | " + " | ".join(f"n={k}" for k in range(num_scenarios)) + " | labels shown | L2 |"
    sep = "|---" * (num_scenarios + 4) + "|"
    lines = [head, sep]
    for name, m in rows.items():
        cells = " | ".join(f"{100 * m[f'success_rate_n{k}']:.1f}" for k in range(num_scenarios))
        lines.append(
            f"| {name} | {int(m['num_samples'])} | {cells} | {m['labels_shown_mean']:.2f} | {m['l2_mean']:.3f} |"
        )
    return "\n".join(lines)
