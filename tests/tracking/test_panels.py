"""The attack panel stays readable with many labels: no text over a picture, added/lost labels coloured, the
perturbation's amplification stated."""

import matplotlib.colors as mcolors
import torch

from mlattack.tracking.panels import ADDED, LOST, amplification, attack_panel, plt


def sample(before: int, after: int) -> dict:
    clean = torch.full((3, 16, 16), 0.5)
    adv = clean + 0.01 * torch.randn(3, 16, 16, generator=torch.Generator().manual_seed(0))
    names = [f"label_number_{j:02d}" for j in range(40)]
    return {"clean": clean, "adv": adv, "before": names[:before], "after": names[10 : 10 + after]}


def test_no_label_text_overlaps_an_image_even_with_many_labels():
    samples = [sample(25, 30), sample(2, 5)]
    fig = attack_panel(samples, title="PGD: show all labels")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    images = [ax.get_window_extent(renderer) for ax in fig.axes if ax.images]
    texts = [t for ax in fig.axes for t in [*ax.texts, ax.title] if t.get_text()] + list(fig.texts)
    assert len(images) == 6
    for t in texts:
        box = t.get_window_extent(renderer)
        for im in images:
            assert not box.overlaps(im), t.get_text()[:40]
    titles = [ax.title.get_window_extent(renderer) for ax in fig.axes if ax.title.get_text()]
    assert not any(fig.texts[0].get_window_extent(renderer).overlaps(b) for b in titles)  # the figure's title
    colours = {t.get_text().split(" ")[0]: mcolors.to_hex(t.get_color()) for ax in fig.axes for t in ax.texts}
    assert colours["added"] == ADDED and colours["lost"] == LOST
    r = samples[0]["adv"] - samples[0]["clean"]
    assert any(f"x{amplification(r):.3g}" in ax.title.get_text() for ax in fig.axes)
    plt.close(fig)
