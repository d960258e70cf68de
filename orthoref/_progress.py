"""Progress of long work (training epochs, ``orthoref bench``, ``compare-projections``, ``oracle check`` and
``export``): a bar on a terminal, nothing otherwise.

The bar is tqdm's where tqdm is installed (the ``progress`` extra), else a one-line text bar; it is drawn on
stderr only when stderr is a terminal and the caller has not disabled it (``--no-progress``), so that logs,
pipes and CI output stay line-oriented: the results themselves always go to stdout.
"""
from __future__ import annotations

import sys

__all__ = ["Progress", "progress"]


def _on_terminal() -> bool:
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


class Progress:
    """A bar over ``total`` steps (``None``: a counter), shown when ``enabled`` and stderr is a terminal.

    ``update(n=1, **postfix)`` advances it (``postfix``: values shown beside it, e.g. ``loss=0.31``);
    ``close()`` removes it. A context manager."""

    def __init__(self, total=None, desc="", enabled=True, unit="it"):
        self.total, self.desc, self.n = total, desc, 0
        self.enabled = bool(enabled) and _on_terminal()
        self.bar = None
        if self.enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                return
            self.bar = tqdm(total=total, desc=desc, leave=False, unit=unit, dynamic_ncols=True, file=sys.stderr)

    def update(self, n=1, **postfix):
        self.n += n
        if not self.enabled:
            return
        text = " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in postfix.items())
        if self.bar is not None:
            if postfix:
                self.bar.set_postfix_str(text, refresh=False)
            self.bar.update(n)
            return
        if self.total:
            filled = int(30 * min(self.n, self.total) / self.total)
            line = f"{self.desc} [{'#' * filled}{'.' * (30 - filled)}] {self.n}/{self.total} {text}"
        else:
            line = f"{self.desc} {self.n} {text}"
        sys.stderr.write("\r" + line[:120])
        sys.stderr.flush()

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif self.enabled:
            sys.stderr.write("\r" + " " * 120 + "\r")
            sys.stderr.flush()
        self.enabled = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def progress(iterable, total=None, desc="", enabled=True, unit="it"):
    """The items of ``iterable``, with a :class:`Progress` bar advancing by one per item (``total``: its
    length where known; ``len(iterable)`` is used when it has one)."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)
    with Progress(total, desc, enabled, unit) as bar:
        for item in iterable:
            yield item
            bar.update()
