"""report.html is self-contained; the figures keep their lines and labels apart; the panel's title is exact."""

from html.parser import HTMLParser

import numpy as np
import pandas as pd
import torch

from mlattack.attacks import APGD, FGM, FGSM, MLDP, SLIDE
from mlattack.report.costs import success_vs_cost_figure
from mlattack.report.html import markdown_to_html
from mlattack.report.plots import place_labels, plt, success_vs_budget_figure, success_vs_n_figure
from mlattack.report.tables import SCENARIO_COLUMNS, add_intervals, to_markdown
from mlattack.tracking.panels import budget_text, panel_title, plural


class Links(HTMLParser):
    """Every src/href of a page, and its tag names."""

    def __init__(self):
        super().__init__()
        self.targets, self.tags = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.targets += [v for k, v in attrs if k in ("src", "href", "data", "srcset", "action")]


def success(rows: dict[str, list[float]], n: int = 10) -> pd.DataFrame:
    frame = pd.DataFrame.from_dict({k: [n, *v] for k, v in rows.items()}, orient="index",
                                   columns=["N", *SCENARIO_COLUMNS])  # fmt: skip
    frame.index.name = "attack"
    return add_intervals(frame, dict.fromkeys(SCENARIO_COLUMNS, "N"))


def test_html_embeds_figures_and_links_no_file(tmp_path):
    (tmp_path / "figures").mkdir()
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    fig.savefig(tmp_path / "figures" / "a.png")
    plt.close(fig)
    table = to_markdown(success({"FGSM": [40.0] * 8}))
    md = "\n".join([
        "# Attack report", "", "Runs in [runs.csv](runs.csv), model `models:/x@best`.", "", "## Net", "",
        table, "", "Files: [md](tables/s.md), [csv](tables/s.csv)", "", "![success vs n](figures/a.png)", "",
        "> Note: rows come from 2 models", "",
    ])  # fmt: skip
    page = markdown_to_html(md, tmp_path)
    links = Links()
    links.feed(page)
    assert links.targets and all(t.startswith("data:image/png;base64,") for t in links.targets)
    assert links.tags.count("img") == 1 and links.tags.count("table") == 1 and "link" not in links.tags
    assert (
        "40 % [17–69]" in page
        and "<code>tables/s.csv</code>" in page
        and "<code>models:/x@best</code>" in page
    )
    assert "<blockquote>" in page and "<h2>Net</h2>" in page


def test_identical_curves_stay_visible_with_distinct_styles_and_error_bars():
    same = [100, 100, 90, 50, 20, 0, 0, 0]
    table = success({name: list(map(float, same)) for name in ("FGSM", "BIM", "PGD", "MIFGSM", "FGM",
                                                                "SLIDE", "MLCW", "MLDP", "MLALP")})  # fmt: skip
    fig = success_vs_n_figure(table, "t")
    ax = fig.axes[0]
    bars = [c for c in ax.containers if c.get_label() in table.index]  # one error-bar container per attack
    lines = [c.lines[0] for c in bars]
    assert len(lines) == 9
    assert len({(line.get_linestyle(), line.get_marker()) for line in lines}) == 9
    xs = {tuple(np.round(line.get_xdata(), 6)) for line in lines}
    assert len(xs) == 9  # dodged: no line is drawn on top of another
    assert all(c.has_yerr and c.lines[2] for c in bars)  # every line carries its interval
    plt.close(fig)


def boxes_overlap(texts, renderer) -> list[tuple[str, str]]:
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts]
    return [(a, b) for i, (a, p) in enumerate(boxes) for b, q in boxes[i + 1 :] if p.overlaps(q)]


def test_labels_of_coinciding_points_do_not_collide():
    fig, ax = plt.subplots(figsize=(6, 4))
    points = [(1.0, 50.0, "PGD"), (1.0, 50.0, "SLIDE"), (1.02, 50.5, "BIM"), (1.01, 49.5, "MIFGSM"),
              (3.0, 80.0, "FGSM"), (1.0, 50.2, "MLCW-reduced")]  # fmt: skip
    ax.scatter([p[0] for p in points], [p[1] for p in points])
    ax.set_xlim(0.5, 5)
    ax.set_ylim(0, 100)
    fig.canvas.draw()
    texts = place_labels(ax, points)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    assert [t.get_text() for t in texts] == [p[2] for p in points]
    assert boxes_overlap(texts, renderer) == []
    frame = ax.get_window_extent(renderer)
    for t in texts:
        box = t.get_window_extent(renderer)
        assert frame.contains(box.x0, box.y0) and frame.contains(box.x1, box.y1), t.get_text()
    plt.close(fig)


def test_cost_figure_labels_do_not_collide_and_carry_intervals():
    frame = success({"FGSM": [90.0] * 8, "PGD": [60.0] * 8, "SLIDE": [60.0] * 8, "BIM": [61.0] * 8})
    frame["ms/sample"] = [2.0, 40.0, 40.0, 41.0]
    frame["fwd/sample"] = [1.0, 30.0, 30.0, 30.0]
    frame["bwd/sample"] = frame["fwd/sample"]
    frame["labels shown"] = [3.0, 5.0, 5.0, 5.1]
    fig = success_vs_cost_figure(frame, "cost")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        assert sorted(t.get_text() for t in ax.texts) == ["BIM", "FGSM", "PGD", "SLIDE"]
        assert boxes_overlap(ax.texts, renderer) == []
    assert fig.axes[1].containers or fig.axes[1].collections  # error bars on the success panel
    plt.close(fig)


def test_panel_title_names_the_budget_and_counts_in_words():
    assert (
        plural(1, "label") == "1 label"
        and plural(0, "label") == "0 labels"
        and plural(2, "sample") == "2 samples"
    )
    assert budget_text(FGSM(eps=0.3)) == "L∞ budget ε = 0.3"
    assert budget_text(FGM(eps=1.0)) == "L2 budget ε = 1"
    assert budget_text(SLIDE(eps=300.0)) == "L1 budget ε = 300"
    assert budget_text(MLDP()) == "no budget (minimal perturbation)"
    assert budget_text(APGD(eps=0.5, norm="L2")) == "L2 budget ε = 0.5"  # a setting, not the class's norm
    assert panel_title("PGD", FGSM(eps=0.3), 1) == "PGD: show all labels\nL∞ budget ε = 0.3, 1 sample shown"


def test_panel_headings_use_the_singular_for_one_label():
    from mlattack.tracking.panels import attack_panel

    clean = torch.full((3, 8, 8), 0.5)
    fig = attack_panel(
        [{"clean": clean, "adv": clean + 0.01, "before": ["cat"], "after": ["cat", "dog"]}], "t"
    )
    titles = [ax.get_title() for ax in fig.axes]
    assert "clean: 1 label" in titles and "adversarial: 2 labels" in titles
    plt.close(fig)


def test_budget_figure_ticks_are_apart_and_equal_curves_share_one_band():
    curve = success(
        {"0.02": [40.0, *[0.0] * 7], "0.1": [50.0, 10.0, *[0.0] * 6], "0.3": [30.0, 10.0, *[0.0] * 6]}
    )
    curve.index = pd.Index([0.02, 0.1, 0.3], name="eps")
    fig = success_vs_budget_figure(curve.drop(columns=["N"]), "eps", "sweep")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    ticks = [t for t in ax.get_xticklabels() if t.get_text() and t.get_visible()]
    ticks += [t for t in ax.xaxis.get_minorticklabels() if t.get_text() and t.get_visible()]
    assert len(ticks) >= 3 and boxes_overlap(ticks, renderer) == []
    assert len(ax.collections) == 3  # n=0, n=1 and one band for the six curves at 0 %
    plt.close(fig)
