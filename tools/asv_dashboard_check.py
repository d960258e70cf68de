"""Render the published asv dashboard in headless Chromium and check that benchmarks are listed.

    python tools/asv_dashboard_check.py [HTML_DIR] [--expect NAME ...]

``HTML_DIR`` is what ``asv publish`` wrote (default ``asv_benchmarks/html``). The directory is served over
HTTP on 127.0.0.1 (as ``asv preview`` does: the page loads its JSON with XHR, which Chromium refuses over
``file://``), Chromium dumps the DOM after the page's scripts ran (``--dump-dom --virtual-time-budget``),
and every expected name (default: one benchmark per area) must appear as a ``benchmark-text`` entry of
the summary grid, e.g. ``TrainStep.time_mlp_step``. Exit status 0 when all are there, 1 when some are
missing, 2 when Chromium or the HTML is missing.

asv 0.6's ``index.html`` loads jQuery, Flot, Bootstrap, blueimp-md5, stupidtable and flot-orderBars from
CDNs; without network access the page shows asv's "external (JavaScript) dependencies failed to load"
error instead of the grid. Then (``--offline auto``, the default) the check renders a copy of the
dashboard whose CDN tags point to local files: Debian's ``libjs-jquery``, ``libjs-jquery-flot``,
``libjs-bootstrap`` and ``node-blueimp-md5`` (``apt-get install -y libjs-jquery libjs-jquery-flot
libjs-bootstrap node-blueimp-md5``), and no-op stand-ins for the table-sorting and bar-ordering plugins,
which the summary grid does not use. asv's own scripts (``asv.js``, ``summarygrid.js``, ...), which build
the list from ``index.json``, run unchanged.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import http.server
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import threading

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_HTML = ROOT / "asv_benchmarks" / "html"
DEFAULT_EXPECT = [
    "TrainStep.time_mlp_step", "TrainStep.time_cnn_step", "TrainStep.peakmem_mlp_step", "Init.time_init",
    "Regularizers.time_value_and_grad", "Projections.time_forward", "Layers.time_linear_forward",
    "Optimizers.time_step", "NewtonSchulzCoefficients.track_worst_error",
]
CHROMIUMS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
#: what the page shows when a CDN script did not load (asv's error.html)
LOAD_FAILURE = "external (JavaScript) dependencies of airspeed velocity failed to load"
_JS = pathlib.Path("/usr/share/javascript")
#: file name in asv's CDN URL -> local copy (Debian packages)
LOCAL_COPIES = {
    "jquery-3.3.1.min.js": _JS / "jquery" / "jquery.min.js",
    "jquery.flot.min.js": _JS / "jquery-flot" / "jquery.flot.min.js",
    "jquery.flot.time.min.js": _JS / "jquery-flot" / "jquery.flot.time.min.js",
    "jquery.flot.selection.min.js": _JS / "jquery-flot" / "jquery.flot.selection.min.js",
    "jquery.flot.categories.min.js": _JS / "jquery-flot" / "jquery.flot.categories.min.js",
    "md5.min.js": _JS / "blueimp-md5" / "md5.min.js",
    "bootstrap.min.js": _JS / "bootstrap" / "js" / "bootstrap.min.js",
    "bootstrap.min.css": _JS / "bootstrap" / "css" / "bootstrap.min.css",
}
#: file name -> stand-in text, for plugins the summary grid does not need
STAND_INS = {
    "stupidtable.min.js": "(function ($) { $.fn.stupidtable = function () { return this; }; })(jQuery);\n",
    "jquery.flot.orderBars.js": "/* flot-orderBars stand-in: bar ordering is not needed for the check */\n",
}
_CDN_TAG = re.compile(r'<(script|link)\b[^>]*?(?:src|href)="(https?://[^"]+)"[^>]*>(?:\s*</script>)?', re.S)


def find_chromium() -> str | None:
    """The first Chromium-like browser on ``PATH``, or ``None``."""
    for name in CHROMIUMS:
        path = shutil.which(name)
        if path:
            return path
    return None


@contextlib.contextmanager
def serve(directory):
    """A static HTTP server for ``directory`` on a free port of 127.0.0.1; yields the base URL."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def dump_dom(url, chromium, budget_ms=10000, timeout=120) -> str:
    """The DOM of ``url`` after ``budget_ms`` of virtual time in headless Chromium."""
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--no-first-run", "--no-default-browser-check", f"--virtual-time-budget={budget_ms}", "--dump-dom", url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if out.returncode != 0 and not out.stdout:
        raise RuntimeError(f"{chromium} exited with {out.returncode}: {out.stderr[-2000:]}")
    return out.stdout


def offline_copy(html_dir, dest) -> list[str]:
    """Copy ``html_dir`` to ``dest`` with the CDN tags of ``index.html`` pointing to local files; returns
    the names replaced by stand-ins. ``FileNotFoundError`` when a needed local copy is missing."""
    shutil.copytree(html_dir, dest)
    vendor = pathlib.Path(dest) / "_offline"
    vendor.mkdir()
    stand_ins = []

    def local(match):
        kind, url = match.group(1), match.group(2)
        name = url.rsplit("/", 1)[-1]
        if name in LOCAL_COPIES:
            if not LOCAL_COPIES[name].is_file():
                raise FileNotFoundError(f"{LOCAL_COPIES[name]} (for {url}) not found: apt-get install -y "
                                        "libjs-jquery libjs-jquery-flot libjs-bootstrap node-blueimp-md5")
            shutil.copyfile(LOCAL_COPIES[name], vendor / name)
        elif name in STAND_INS:
            (vendor / name).write_text(STAND_INS[name])
            stand_ins.append(name)
        else:
            raise FileNotFoundError(f"no local copy known for {url}")
        if kind == "link":
            return f'<link rel="stylesheet" href="_offline/{name}">'
        return f'<script type="text/javascript" src="_offline/{name}"></script>'

    index = pathlib.Path(dest) / "index.html"
    index.write_text(_CDN_TAG.sub(local, index.read_text()))
    return stand_ins


def listed_benchmarks(dom: str) -> set[str]:
    """Names shown in the summary grid (``<div class="benchmark-text">Class.method</div>``)."""
    return set(re.findall(r'<div class="benchmark-text"[^>]*>([^<]+)</div>', dom))


def render(html_dir, chromium, budget_ms=10000) -> str:
    with serve(html_dir) as url:
        return dump_dom(url + "index.html", chromium, budget_ms)


def check(html_dir=DEFAULT_HTML, expect=DEFAULT_EXPECT, chromium=None, budget_ms=10000, offline="auto"):
    """``(missing, listed, dom, how)`` for the dashboard in ``html_dir``; ``how`` says whether the page
    rendered as published or from the offline copy (``offline``: "auto", "always" or "never")."""
    html_dir = pathlib.Path(html_dir)
    if not (html_dir / "index.html").is_file():
        raise FileNotFoundError(f"{html_dir / 'index.html'} not found: run `asv publish` first")
    chromium = chromium or find_chromium()
    if chromium is None:
        raise FileNotFoundError("no Chromium found (Debian: apt-get install -y chromium)")
    dom, how = None, "as published (CDN scripts loaded)"
    if offline != "always":
        dom = render(html_dir, chromium, budget_ms)
    if offline != "never" and (dom is None or LOAD_FAILURE in dom):
        with tempfile.TemporaryDirectory() as tmp:
            stand_ins = offline_copy(html_dir, pathlib.Path(tmp) / "html")
            dom = render(pathlib.Path(tmp) / "html", chromium, budget_ms)
        how = ("offline copy: CDN scripts replaced by local files" +
               (f", stand-ins for {', '.join(stand_ins)}" if stand_ins else ""))
    listed = listed_benchmarks(dom)
    return [name for name in expect if name not in listed], listed, dom, how


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("html_dir", nargs="?", default=str(DEFAULT_HTML))
    parser.add_argument("--expect", action="append", help="a benchmark name (Class.method); repeatable")
    parser.add_argument("--chromium", help="the browser executable (default: found on PATH)")
    parser.add_argument("--budget-ms", type=int, default=10000, help="virtual time for the page's scripts")
    parser.add_argument("--offline", choices=("auto", "always", "never"), default="auto",
                        help="render a copy with local scripts: when the CDN ones fail (auto), always, never")
    args = parser.parse_args(argv)
    try:
        missing, listed, dom, how = check(args.html_dir, args.expect or DEFAULT_EXPECT, args.chromium,
                                          args.budget_ms, args.offline)
    except FileNotFoundError as exc:
        print(f"asv_dashboard_check: {exc}", file=sys.stderr)
        return 2
    if LOAD_FAILURE in dom:
        print("the page could not load its JavaScript dependencies (asv's error page)")
    print(f"{len(listed)} benchmarks listed on the dashboard, rendered {how}")
    if missing:
        print("missing: " + ", ".join(missing))
        return 1
    print("all expected benchmarks present: " + ", ".join(args.expect or DEFAULT_EXPECT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
