"""Figures of :mod:`orthoref.analysis` (matplotlib, an optional dependency: ``pip install 'orthoref[plot]'``).

matplotlib is imported only when a figure is drawn, and only its object-oriented API is used
(``matplotlib.figure.Figure``, no ``pyplot``): drawing never changes the caller's backend or global state
and needs no display. PNGs are written atomically (temporary file, fsync, rename).
"""
from __future__ import annotations

import io
import math

import numpy as np

from ._io import atomic_write

__all__ = ["plain_log_ticks", "plot_filter_angles", "plot_jacobian_spectrum", "plot_spectra", "require_matplotlib",
           "shared_legend"]

_HINT = "matplotlib is needed for the figures: pip install 'orthoref[plot]' (or pip install matplotlib)"


def require_matplotlib():
    """Import matplotlib or raise ImportError saying how to install it; returns the module."""
    try:
        import matplotlib
    except ImportError as exc:
        raise ImportError(f"{_HINT}; the import failed with: {exc!r}") from exc
    return matplotlib


def figure_grid(n, width=4.0, height=3.0, max_cols=3):
    """A ``Figure`` of ``n`` panels in rows of at most ``max_cols`` (each ``width`` x ``height`` inches)
    and its ``n`` axes; the spare cells of the last row are hidden."""
    require_matplotlib()
    from matplotlib.figure import Figure
    cols = max(1, min(n, max_cols))
    rows = max(1, math.ceil(n / cols))
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def save_png(fig, path, dpi=110):
    """Write ``fig`` to ``path`` as a PNG, atomically; returns ``path``."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    atomic_write(path, lambda f: f.write(buf.getvalue()))
    return path


def plain_log_ticks(ax):
    """Label the log-scaled axes of ``ax`` with plain numbers ("0.3", "2", "300") where matplotlib's
    default would write "3×10⁻¹", "2×10⁰"; values outside [1e-3, 1e4) keep the 10^k form. Which ticks
    get a label is matplotlib's choice, unchanged. Call it after setting the scale (which resets the
    formatters)."""
    from matplotlib.ticker import LogFormatterSciNotation

    class PlainLogFormatter(LogFormatterSciNotation):
        def __call__(self, x, pos=None):
            label = super().__call__(x, pos)
            return f"{x:g}" if label and 1e-3 <= abs(x) < 1e4 else label

    for axis in (ax.xaxis, ax.yaxis):
        if axis.get_scale() == "log":
            base = getattr(axis.get_transform(), "base", 10)
            axis.set_major_formatter(PlainLogFormatter(base))
            axis.set_minor_formatter(PlainLogFormatter(base, labelOnlyBase=False))


def shared_legend(fig, axes, ncol=None, fontsize=8, title=None):
    """One legend for panels that draw the same series, below them (the labels of all ``axes``, each
    once, in order of appearance). matplotlib < 3.7 cannot make room for a figure legend, so there every
    panel gets its own."""
    handles, labels = [], []
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(h)
                labels.append(label)
    ncol = ncol or min(len(labels), 4)
    try:
        return fig.legend(handles, labels, loc="outside lower center", ncol=ncol, fontsize=fontsize,
                          title=title, title_fontsize=fontsize)
    except ValueError:                      # no "outside" locations before matplotlib 3.7
        for ax in axes:
            ax.legend(fontsize=fontsize, title=title, title_fontsize=fontsize)
        return None


def plot_spectra(spectra, path, title="Singular values of each weight (M = W.reshape(out, -1))"):
    """One panel per weight: its singular values in descending order (log scale), with σ = 1 dashed.

    Parameters
    ----------
    spectra : dict name -> (k,) array of singular values (host or anything ``np.asarray`` takes)
    path : str, the PNG to write
    """
    fig, axes = figure_grid(len(spectra))
    for ax, (name, s) in zip(axes, spectra.items()):
        s = np.asarray(s, dtype=np.float64)
        ax.semilogy(np.arange(1, len(s) + 1), np.where(s > 0, s, np.nan), lw=1.5,
                    label="singular values σ_i, descending")
        ax.axhline(1.0, color="gray", ls="--", lw=0.8, label="σ = 1 (an orthogonal M has every σ_i = 1)")
        plain_log_ticks(ax)
        ax.set_title(f"{name}  (k={len(s)})", fontsize=9)
        ax.set_xlabel("index i (1 = largest)")
        ax.set_ylabel("σ_i (log scale)")
    fig.suptitle(title, fontsize=10)
    shared_legend(fig, axes, ncol=2)
    return save_png(fig, path)


def plot_filter_angles(angles, path, bins=90,
                       title="Pairwise angles between filters (rows of M), degrees"):
    """One histogram per weight of the filter angles (:func:`orthoref.analysis.filter_angles`), 90° marked.

    Parameters
    ----------
    angles : dict name -> 1-D array of angles in degrees (NaN entries ignored)
    path : str, the PNG to write
    bins : int, bins over [0, 180]
    """
    fig, axes = figure_grid(len(angles))
    for ax, (name, a) in zip(axes, angles.items()):
        a = np.asarray(a, dtype=np.float64)
        a = a[np.isfinite(a)]
        ax.hist(a, bins=bins, range=(0.0, 180.0), color="tab:blue", label="pairs of filters")
        ax.axvline(90.0, color="gray", ls="--", lw=0.8, label="90° (orthogonal filters)")
        mean = f", mean {a.mean():.1f}°" if a.size else ""
        ax.set_title(f"{name}  ({a.size} pairs{mean})", fontsize=9)
        ax.set_xlim(0, 180)
        ax.set_xlabel("angle (degrees)")
        ax.set_ylabel(f"pairs per {180 / bins:g}° bin")
    fig.suptitle(title, fontsize=10)
    shared_legend(fig, axes, ncol=2)
    return save_png(fig, path)


def plot_jacobian_spectrum(sigma, path, bins=60,
                           title="Singular values of the input–output Jacobian (all examples)"):
    """Histogram of the Jacobian singular values of all examples (``(N, k)`` array), σ = 1 marked."""
    s = np.asarray(sigma, dtype=np.float64).ravel()
    fig, (ax,) = figure_grid(1, width=5.0, height=3.5)
    positive = s[s > 0]
    if positive.size:
        edges = np.geomspace(positive.min(), positive.max() * (1 + 1e-9), bins + 1)
        ax.hist(positive, bins=edges, color="tab:green", label="singular values (all examples)")
        ax.set_xscale("log")
        plain_log_ticks(ax)
    ax.axvline(1.0, color="gray", ls="--", lw=0.8, label="σ = 1 (isometry)")
    ax.set_xlabel("σ (log scale)")
    ax.set_ylabel("count per bin")
    ax.legend(fontsize=8)
    n = np.asarray(sigma).shape[0] if np.ndim(sigma) == 2 else 1
    ax.set_title(f"{title}\n{n} examples, mean {s.mean():.3g}, max/min {s.max():.3g}/{s.min():.3g}",
                 fontsize=9)
    return save_png(fig, path)
