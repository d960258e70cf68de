"""Every figure the package writes is readable on its own: labelled axes, a legend wherever an axes draws
more than one series (reference lines included), curves inside the frame, plain tick labels on short log
axes and point labels that do not overlap.

The figures are those of every study in quick mode (:func:`orthoref.studies.run`), of ``orthoref
analyze`` (:func:`orthoref.analysis.analyze_checkpoint`) and of ``orthoref oracle twin-train --plot``
(:func:`orthoref.oracle.twin_train.plot_errors`). They are checked on the matplotlib ``Figure`` objects,
not by comparing images: ``Figure.savefig`` is wrapped to record each figure as it is written (after
``savefig`` the figure has been drawn, so tick labels and text extents are final).
"""
import contextlib
import math
import os
import re

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from matplotlib.collections import Collection
from matplotlib.container import Container
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from orthoref import analysis, studies, train


@contextlib.contextmanager
def recording_figures():
    """Yield a list that gets every ``Figure`` saved inside the block, in order."""
    saved = []
    original = Figure.savefig

    def savefig(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        saved.append(self)
        return out

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Figure, "savefig", savefig)
        yield saved


@pytest.fixture(scope="module")
def figures(tmp_path_factory):
    """name -> Figure for every PNG the package writes."""
    out = {}
    root = tmp_path_factory.mktemp("figures")
    for name in studies.STUDIES:
        with recording_figures() as saved:
            res = studies.run(name, str(root / name), quick=True, seed=0)
        assert len(saved) == len(res["figures"]), name
        out.update({os.path.basename(p): f for p, f in zip(res["figures"], saved)})

    ckpt = train.fit(train.TrainConfig(hidden=(16, 12), epochs=1, dtype="float64", out=str(root / "run"),
                                       progress=False), log=None)["checkpoint"]
    with recording_figures() as saved:
        analysis.analyze_checkpoint(ckpt, str(root / "analysis"), figures=True, jacobian_examples=4)
    names = ("spectra.png", "filter_angles.png", "jacobian.png")
    assert len(saved) == len(names)
    out.update(zip(names, saved))

    try:
        from orthoref.oracle.twin_train import plot_errors
    except ImportError:        # the oracle needs PyTorch
        plot_errors = None
    if plot_errors is not None:
        steps = list(range(1, 11))
        result = {"steps": steps, "param_rel_diff": [1e-15 * 1.5 ** s for s in steps],
                  "loss_rel_diff": [1e-16 * 2.0 ** s for s in steps],
                  "config": {"model": "mlp", "optimizer": "adam", "reg": []}}
        with recording_figures() as saved:
            plot_errors(result, str(root / "twin.png"))
        out["twin_train.png"] = saved[0]
    return out


EXPECTED = ("depth_gradnorm.png", "depth_jacobian.png", "regularizers_curves.png", "regularizers_angles.png",
            "projections_tradeoff.png", "projections_polynomials.png", "compression_rank.png", "rnn_adding.png",
            "autoencoder_angles.png", "autoencoder_mse.png", "autoencoder_directions.png", "article_curves.png",
            "spectra.png", "filter_angles.png", "jacobian.png")


def test_every_figure_is_recorded(figures):
    assert set(EXPECTED) <= set(figures), sorted(figures)


def _axes(fig):
    return [ax for ax in fig.axes if ax.get_visible()]


def _where(name, ax):
    return f"{name}, axes {ax.get_title()!r}"


def _labelled(artist):
    """Whether the legend shows ``artist``: its label, or for a container (where ``hist`` labels the first
    bar, not the container) its own or a child's, is set and not "_..."."""
    labels = [artist.get_label()]
    if isinstance(artist, Container):
        labels += [child.get_label() for child in _flatten(artist)]
    return any(label and not str(label).startswith("_") for label in labels)


def _series(ax):
    """What an axes draws, one entry per legend-able series: each container (an errorbar, a bar
    histogram) counts once, and every visible line, collection or patch outside a container once."""
    inside = {id(child) for c in ax.containers for child in _flatten(c)}
    out = list(ax.containers)
    for artist in list(ax.lines) + list(ax.collections) + list(ax.patches):
        if id(artist) not in inside and artist.get_visible():
            out.append(artist)
    return out


def _flatten(container):
    for child in container:
        if child is None:
            continue
        if isinstance(child, (Line2D, Collection, Patch)):
            yield child
        else:
            yield from _flatten(child)


def _legend_texts(ax):
    """Texts of the axes legend, or of the figure legends when the axes has none."""
    legend = ax.get_legend()
    if legend is not None:
        return [t.get_text() for t in legend.get_texts()]
    return [t.get_text() for leg in ax.figure.legends for t in leg.get_texts()]


@pytest.mark.parametrize("name", EXPECTED + ("twin_train.png",))
def test_axes_are_labelled(figures, name):
    if name not in figures:
        pytest.skip(f"{name} not drawn here")
    for ax in _axes(figures[name]):
        assert ax.get_xlabel().strip(), f"{_where(name, ax)}: no x label"
        assert ax.get_ylabel().strip(), f"{_where(name, ax)}: no y label"


@pytest.mark.parametrize("name", EXPECTED + ("twin_train.png",))
def test_several_series_have_a_legend(figures, name):
    """An axes drawing two or more series (a dashed reference line is one) names each in a legend: its
    own, with one entry per labelled artist, or the figure's, holding every label of the axes."""
    if name not in figures:
        pytest.skip(f"{name} not drawn here")
    for ax in _axes(figures[name]):
        series = _series(ax)
        if len(series) < 2:
            continue
        unnamed = [type(a).__name__ for a in series if not _labelled(a)]
        assert not unnamed, f"{_where(name, ax)}: {len(series)} series, unnamed: {unnamed}"
        texts = _legend_texts(ax)
        assert texts, f"{_where(name, ax)}: {len(series)} series and no legend"
        handles, labels = ax.get_legend_handles_labels()
        if ax.get_legend() is not None:
            assert len(texts) == len(handles), f"{_where(name, ax)}: legend {texts} vs labels {labels}"
        else:
            assert set(labels) <= set(texts), f"{_where(name, ax)}: {set(labels) - set(texts)} not in legend"
        assert len(set(labels)) == len(labels), f"{_where(name, ax)}: repeated legend labels {labels}"


def _inside(values, lo, hi, log):
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if log:
        values = values[values > 0]
        values, lo, hi = np.log10(values), math.log10(lo), math.log10(hi)
    lo, hi = min(lo, hi), max(lo, hi)
    slack = 1e-9 * (hi - lo)
    return bool(np.all((values >= lo - slack) & (values <= hi + slack)))


@pytest.mark.parametrize("name", EXPECTED + ("twin_train.png",))
def test_curves_stay_in_the_frame(figures, name):
    """Every point of every data line lies inside the axes limits (a curve may end at the frame, masked,
    but never run off it)."""
    if name not in figures:
        pytest.skip(f"{name} not drawn here")
    for ax in _axes(figures[name]):
        for line in ax.lines:
            if not line.get_visible() or line.get_transform() != ax.transData:
                continue      # axhline/axvline: drawn across the axes by construction
            x, y = line.get_xdata(), line.get_ydata()
            what = f"{_where(name, ax)}, line {line.get_label()!r}"
            assert _inside(x, *ax.get_xlim(), ax.get_xscale() == "log"), f"{what} leaves the x range"
            assert _inside(y, *ax.get_ylim(), ax.get_yscale() == "log"), f"{what} leaves the y range"


def _tick_labels(axis):
    """The tick label texts drawn on ``axis`` (major and minor, inside the view interval)."""
    lo, hi = sorted(axis.get_view_interval())
    slack = 1e-9 * (hi - lo)
    out = []
    for ticks, locs in ((axis.get_major_ticks(), axis.get_majorticklocs()),
                        (axis.get_minor_ticks(), axis.get_minorticklocs())):
        out += [tick.label1 for tick, loc in zip(ticks, locs) if lo - slack <= loc <= hi + slack]
    return out


_SCI = re.compile(r"\\times\s*10\^\{?\s*([-−]?\d+)")


@pytest.mark.parametrize("name", EXPECTED + ("twin_train.png",))
def test_log_ticks_are_plain_numbers(figures, name):
    """No log-axis tick reads like '3×10⁰': between 10⁻³ and 10⁴ a plain number is shorter."""
    if name not in figures:
        pytest.skip(f"{name} not drawn here")
    for ax in _axes(figures[name]):
        for axis in (ax.xaxis, ax.yaxis):
            if axis.get_scale() != "log":
                continue
            texts = [t.get_text() for t in _tick_labels(axis)]
            bad = [t for t in texts if (m := _SCI.search(t)) and -3 <= int(m.group(1).replace("−", "-")) <= 3]
            assert not bad, f"{_where(name, ax)}: {axis.axis_name} tick labels {bad}"


@pytest.mark.parametrize("name", EXPECTED + ("twin_train.png",))
def test_labels_do_not_overlap(figures, name):
    if name not in figures:
        pytest.skip(f"{name} not drawn here")
    fig = figures[name]
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    for ax in _axes(fig):
        groups = {"point": ax.texts}
        for axis in (ax.xaxis, ax.yaxis):
            groups[f"{axis.axis_name} tick"] = _tick_labels(axis)
        for kind, texts in groups.items():
            boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts
                     if t.get_visible() and t.get_text()]
            for i, (a, box_a) in enumerate(boxes):
                for b, box_b in boxes[i + 1:]:
                    assert not box_a.overlaps(box_b), f"{_where(name, ax)}: {kind} labels {a!r} and {b!r} overlap"


def test_the_checks_catch_the_old_defects():
    """The checks above fail on figures drawn the way the old ones were."""
    fig = Figure()
    ax = fig.subplots()
    ax.semilogy([1, 2, 3], [0.5, 1.5, 3.0])
    ax.axhline(1.0, ls="--")                     # an unexplained dashed line
    ax.set_xlabel("index i")                      # and no y label
    ax.set_ylim(0.8, 2.0)                         # a curve cut off by the axis floor
    ax.annotate("a", (2, 1.5))
    ax.annotate("b", (2, 1.5))
    fig.savefig(__import__("io").BytesIO(), format="png")
    figures = {"old.png": fig}
    for check in (test_axes_are_labelled, test_several_series_have_a_legend, test_curves_stay_in_the_frame,
                  test_log_ticks_are_plain_numbers, test_labels_do_not_overlap):
        with pytest.raises(AssertionError):
            check(figures, "old.png")
