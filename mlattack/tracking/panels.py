"""The clean | adversarial | perturbation panel of an attack run.

Labels are listed beside the images, not in titles, so 20+ labels never overlap a picture: labels the attack added
in green, labels it lost in red, the kept ones in black. The perturbation is shown amplified by a stated factor.
The title names the attack's budget (norm and ε) and the text is sized for the MLflow UI, which shows the
900-pixel-wide figure at about the width of its preview pane.
"""

from __future__ import annotations

import textwrap

import matplotlib

matplotlib.use("Agg")  # headless: figures are written to files / MLflow, never shown

import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

ADDED, LOST, KEPT = "#1a7f37", "#cf222e", "#24292f"
WRAP = 32  # characters per label line (at FONT, the text column of a 9-inch figure)
FONT = 11  # label lines and image headings; the title is larger
#: the norm a budgeted attack bounds, by class (attacks that minimise the perturbation have no budget)
#: how a norm an attack declares (``Attack.norm``, or APGD's ``norm`` setting) is written in a title
NORM_LABELS = {"linf": "L∞", "inf": "L∞", "l2": "L2", "l1": "L1"}


def plural(count: int, word: str) -> str:
    """'1 label', '0 labels', '3 labels'."""
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def budget_text(attack: object) -> str:
    """'L∞ budget ε = 0.3' from the attack's ``eps`` and the norm it declares (``norm``), or
    'no budget (minimal perturbation)' for attacks without one (ML-CW, ML-DP, MLA-LP)."""
    eps = getattr(attack, "eps", None)
    norm = getattr(attack, "norm", None)
    if not isinstance(eps, (int, float)) or norm is None:
        return "no budget (minimal perturbation)"
    return f"{NORM_LABELS.get(str(norm).lower(), str(norm))} budget ε = {eps:g}"


def panel_title(name: str, attack: object, samples: int) -> str:
    """The panel's title: the attack, its target, its budget and how many samples the panel shows."""
    return f"{name}: show all labels\n{budget_text(attack)}, {plural(samples, 'sample')} shown"


def amplification(r: torch.Tensor) -> float:
    """The factor that makes the largest |r| fill half the grey range (display = 0.5 + factor * r)."""
    return 0.5 / float(r.abs().max().clamp(min=1e-12))


def amplify(r: torch.Tensor) -> torch.Tensor:
    """Map a perturbation to [0,1] for display: 0.5 + r / (2 max|r|) (grey = unchanged)."""
    return (0.5 + amplification(r) * r).clamp(0, 1)


def label_lines(before: list[str], after: list[str]) -> list[tuple[str, str]]:
    """(text, colour) lines: added, lost and kept labels, wrapped."""
    added = [n for n in after if n not in before]
    lost = [n for n in before if n not in after]
    kept = [n for n in after if n in before]
    lines = []
    for head, names, colour in (("added", added, ADDED), ("lost", lost, LOST), ("kept", kept, KEPT)):
        text = f"{head} ({len(names)}): " + (", ".join(names) if names else "-")
        lines += [(line, colour) for line in textwrap.wrap(text, WRAP, subsequent_indent="    ")]
    return lines


def attack_panel(samples: list[dict], title: str = "") -> plt.Figure:
    """One row per sample: clean image, adversarial image, amplified perturbation, and the label changes."""
    rows = [label_lines(s["before"], s["after"]) for s in samples] or [[]]
    heights = [max(2.4, 0.22 * len(lines) + 0.6) for lines in rows]
    head = 0.45 + 0.3 * len(title.splitlines())  # inches above the first row: the title, then its headings
    fig = plt.figure(figsize=(9, sum(heights) + head))  # 900 px: MLflow shows it near full size
    grid = fig.add_gridspec(len(rows), 4, height_ratios=heights, width_ratios=[1, 1, 1, 1.6], wspace=0.08,
                            hspace=0.3, left=0.02, right=0.98, bottom=0.02, top=1 - head / fig.get_figheight())  # fmt: skip
    for row, s in enumerate(samples):
        clean, adv = s["clean"].float(), s["adv"].float()
        r = adv - clean
        factor = amplification(r)
        pics = [clean, adv, amplify(r)]
        heads = [
            f"clean: {plural(len(s['before']), 'label')}",
            f"adversarial: {plural(len(s['after']), 'label')}",
            f"perturbation x{factor:.3g}\nmax |r| = {float(r.abs().max()):.4f}",
        ]
        for col in range(3):
            ax = fig.add_subplot(grid[row, col])
            ax.imshow(pics[col].permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
            ax.set_title(heads[col], fontsize=FONT)
            ax.axis("off")
        text = fig.add_subplot(grid[row, 3])
        text.axis("off")
        step = 1.0 / max(len(rows[row]), 12)
        for i, (line, colour) in enumerate(rows[row]):
            text.text(0.0, 1.0 - i * step, line, color=colour, fontsize=FONT, va="top", family="monospace",
                      transform=text.transAxes)  # fmt: skip
    if title:
        fig.suptitle(title, fontsize=13, y=1 - 0.12 / fig.get_figheight(), va="top")
    return fig
