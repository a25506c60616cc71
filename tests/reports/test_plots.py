"""The report's figures: the Pareto plot's method labels never overlap."""

from __future__ import annotations

import itertools

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from reports.plots import _overlaps, label_points, place_labels  # noqa: E402


def test_labels_of_points_on_top_of_each_other_are_moved_apart():
    anchors = [(100.0, 100.0)] * 4 + [(104.0, 101.0), (400.0, 100.0)]
    sizes = [(60.0, 12.0)] * len(anchors)
    boxes = place_labels(anchors, sizes, bounds=(0.0, 0.0, 800.0, 600.0))
    for a, b in itertools.combinations(boxes, 2):
        assert not _overlaps(a, b)
    for box, (width, height) in zip(boxes, sizes):
        assert box[2] - box[0] == width and box[3] - box[1] == height
        assert box[0] >= 0 and box[1] >= 0 and box[2] <= 800 and box[3] <= 600
    # A point alone keeps its label beside it, above right.
    assert boxes[-1][0] > 400 and 100 < boxes[-1][1] < 110


def test_a_label_leaves_the_other_points_visible():
    anchors = [(100.0, 100.0), (110.0, 108.0)]  # the second point where the first label goes
    boxes = place_labels(anchors, [(60.0, 12.0)] * 2)
    marker = (106.0, 104.0, 114.0, 112.0)
    assert not _overlaps(boxes[0], marker)


def test_labels_drawn_on_a_plot_do_not_overlap():
    """The demo's Pareto panel: four methods train few parameters, one many; their points sit
    almost on top of each other at this scale."""
    fig, ax = plt.subplots(figsize=(5, 4))
    points = [(0.0, 0.10), (2_000.0, 0.11), (4_000.0, 0.105), (3_000.0, 0.112), (500_000, 0.2)]
    names = ["none", "lora", "ffn_expansion", "hybrid", "full_layer"]
    ax.plot([p[0] for p in points], [p[1] for p in points], "o")
    fig.tight_layout()
    labels = label_points(ax, names, points)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    extents = [label.get_window_extent(renderer) for label in labels]
    assert [label.get_text() for label in labels] == names
    for a, b in itertools.combinations(extents, 2):
        assert not a.overlaps(b), (a, b)
    plt.close(fig)
