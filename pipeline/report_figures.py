"""The data card's figures: horizontal bar charts and the long-tail curve, as PNG (matplotlib only, headless).

    write_bars(Path("demo-out/report/images_per_kingdom.png"), FIGURES["kingdoms"], ["Animalia", "Plantae"],
               {"images": [412, 70]})

Each figure is drawn on its own `matplotlib.figure.Figure` (no pyplot, no display: PNG goes through Agg), in
matplotlib's default style whatever the user's matplotlibrc says, and saved without the Software entry, so the same
numbers give the same bytes. Titles and axis labels live in FIGURES, which the card (as alt text) and its tests
read. A figure with nothing to show is still written, saying so in its middle.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import matplotlib.style
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from taxonomy.build import write_atomic

STYLE = {"font.size": 9, "axes.titlesize": 11, "axes.titleweight": "bold", "savefig.dpi": 110}
WIDTH_IN = 8.0
BAR_IN = 0.3  # height per bar; the figure grows with the number of bars so that no label overlaps another
THRESHOLD_STYLE = {"color": "0.35", "linestyle": ":", "linewidth": 1}


@dataclass(frozen=True, slots=True)
class FigureSpec:
    """One figure of the card: its file name, title, axis labels, how its values read, and what "empty" means."""

    file: str
    title: str
    xlabel: str
    ylabel: str
    empty: str
    value_format: str = "{:,.0f}"


FIGURES: dict[str, FigureSpec] = {
    "kingdoms": FigureSpec("images_per_kingdom.png", "Images per kingdom (train + val)", "images", "kingdom",
                           "no images kept"),
    "long_tail": FigureSpec("long_tail.png", "Images per species, most to fewest", "species rank by images (log scale)",
                            "images (log scale)", "no image labelled to species"),
    "failures": FigureSpec("failures_by_reason.png", "Dropped records by stage and reason", "records dropped",
                           "stage: reason", "no record dropped"),
    "licenses": FigureSpec("license_mix.png", "Images per license terms and source", "images", "license terms",
                           "no license rows"),
    "completeness": FigureSpec("rank_completeness.png", "Label completeness per rank (train + val)",
                               "% labelled to the rank", "rank", "no images kept", "{:.1f}"),
}


@contextmanager
def _drawing(spec: FigureSpec, bars: int) -> Iterator[tuple[Figure, Axes]]:
    """A titled, labelled figure tall enough for `bars` bars, in matplotlib's default style plus STYLE."""
    with matplotlib.style.context(["default", STYLE]):
        figure = Figure(figsize=(WIDTH_IN, max(2.6, 1.4 + BAR_IN * bars)), layout="tight")
        axes = figure.add_subplot()
        axes.set_title(spec.title)
        axes.set_xlabel(spec.xlabel)
        axes.set_ylabel(spec.ylabel)
        yield figure, axes


def _say_empty(axes: Axes, spec: FigureSpec) -> None:
    axes.text(0.5, 0.5, spec.empty, ha="center", va="center", transform=axes.transAxes, color="0.35")
    axes.set_xticks([])
    axes.set_yticks([])


def _save(figure: Figure, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda tmp: figure.savefig(tmp, format="png", metadata={"Software": None}))


def _draw_bars(axes: Axes, spec: FigureSpec, labels: Sequence[str], series: Mapping[str, Sequence[float]],
               stacked: bool) -> None:
    """Bars top-down in the order given; side by side per label, or stacked (then the total is printed)."""
    positions = range(len(labels))
    height = 0.8 if stacked else 0.8 / len(series)
    left = [0.0] * len(labels)
    for index, (name, values) in enumerate(series.items()):
        offsets = positions if stacked else [p - 0.4 + height * (index + 0.5) for p in positions]
        bars = axes.barh(offsets, values, height=height, left=left if stacked else None, label=name)
        if stacked:
            left = [a + b for a, b in zip(left, values, strict=True)]
        else:
            axes.bar_label(bars, labels=[spec.value_format.format(v) for v in values], padding=3, fontsize=8)
    if stacked:
        axes.bar_label(bars, labels=[spec.value_format.format(v) for v in left], padding=3, fontsize=8)
    axes.set_yticks(list(positions), labels=list(labels))
    axes.invert_yaxis()
    axes.margins(x=0.12)
    axes.locator_params(axis="x", integer=True)  # counts: no 0.5-image ticks, and no 1e6 offset label
    axes.xaxis.set_major_formatter(lambda value, _: f"{value:,.0f}")
    if stacked or len(series) > 1:  # stacked series are the sources: name them even when there is one
        axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)


def write_bars(path: Path, spec: FigureSpec, labels: Sequence[str], series: Mapping[str, Sequence[float]],
               stacked: bool = False) -> None:
    """A horizontal bar chart of one or more named series over `labels` (empty `labels`: says spec.empty)."""
    with _drawing(spec, len(labels) * (1 if stacked else len(series))) as (figure, axes):
        if labels:
            _draw_bars(axes, spec, labels, series, stacked)
        else:
            _say_empty(axes, spec)
        _save(figure, path)


def _draw_tail(axes: Axes, counts: Sequence[int], thresholds: Sequence[int]) -> None:
    edges = range(1, len(counts) + 2)  # species i (from 1) spans [i, i + 1): the last one is drawn too
    heights = [*counts, counts[-1]]
    axes.fill_between(edges, heights, step="post", alpha=0.3)
    axes.step(edges, heights, where="post", linewidth=1.2)
    axes.set_xscale("log")  # log-log: the head and the tail of hundreds of thousands of species both show
    axes.set_yscale("log")
    for axis in (axes.xaxis, axes.yaxis):
        axis.set_major_formatter(lambda value, _: f"{value:,.0f}")
    axes.tick_params(which="minor", labelbottom=False, labelleft=False)  # no "2x10^0" labels between decades
    axes.set_xlim(1, len(counts) + 1)
    axes.set_ylim(0.8, max(max(counts), *thresholds) * 1.5)
    for threshold in thresholds:  # labelled outside the plot, on the right, so they never cover the curve
        axes.axhline(threshold, **THRESHOLD_STYLE)
        axes.annotate(f"{threshold} images", (1.0, threshold), xycoords=("axes fraction", "data"), xytext=(4, 0),
                      textcoords="offset points", ha="left", va="center", fontsize=8, color="0.35")


def write_long_tail(path: Path, spec: FigureSpec, counts: Sequence[int], thresholds: Sequence[int]) -> None:
    """Images per species, sorted (largest first), on a log scale, with dotted lines at the tail thresholds."""
    with _drawing(spec, 8) as (figure, axes):
        if counts:
            _draw_tail(axes, counts, thresholds)
        else:
            _say_empty(axes, spec)
        _save(figure, path)
