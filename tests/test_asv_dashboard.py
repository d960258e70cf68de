"""The asv dashboard (``asv publish``) renders in headless Chromium and lists the benchmarks.

With ``ORTHOREF_ASV_HTML`` set (e.g. ``asv_benchmarks/html`` after ``asv publish``) that dashboard is
checked. Otherwise a small one is built in a temporary directory: ``asv run -E existing --quick`` of a few
benchmarks (``ORTHOREF_ASV_PROFILE=fast``) with a copy of ``asv_benchmarks/asv.conf.json`` whose results and
HTML go to the temporary directory, then ``asv publish``. Either way ``tools/asv_dashboard_check.py`` serves
it on 127.0.0.1, dumps Chromium's DOM and looks for the names in the summary grid (offline, asv's CDN
scripts are replaced by Debian's ``libjs-*`` copies: see the tool's docstring).

Skipped without Chromium (Debian: ``apt-get install -y chromium``), without asv, outside a git checkout, or
offline without the local copies of the CDN scripts.
"""
import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
ASV_DIR = ROOT / "asv_benchmarks"
RUN = r"TrainStep.time_mlp_step|TrainStep.peakmem_mlp_step|NewtonSchulzCoefficients|bench_init\.Init\.time_init"


def _checker():
    spec = importlib.util.spec_from_file_location("asv_dashboard_check", ROOT / "tools" / "asv_dashboard_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _asv(args, tmp_path, env):
    out = subprocess.run([sys.executable, "-m", "asv", *args], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=900, check=False)
    assert out.returncode == 0, f"asv {' '.join(args)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


def _publish(tmp_path):
    """A dashboard of a few quick results, built by asv in ``tmp_path``; returns its HTML directory."""
    text = (ASV_DIR / "asv.conf.json").read_text()
    conf = json.loads("\n".join(ln for ln in text.splitlines() if not ln.strip().startswith("//")))
    conf.update(repo=str(ROOT), benchmark_dir=str(ASV_DIR / "benchmarks"), env_dir=str(tmp_path / "env"),
                results_dir=str(tmp_path / "results"), html_dir=str(tmp_path / "html"))
    config = tmp_path / "asv.conf.json"
    config.write_text(json.dumps(conf, indent=2))
    # HOME: asv keeps its machine description in ~/.asv-machine.json; the test's stays in tmp_path.
    env = dict(os.environ, HOME=str(tmp_path), ORTHOREF_ASV_PROFILE="fast")
    common = ["--config", str(config)]
    _asv(["machine", "--yes", "--machine", "dashboard-test", *common], tmp_path, env)
    _asv(["run", "-E", "existing", "--quick", "--machine", "dashboard-test", "--bench", RUN, *common], tmp_path, env)
    _asv(["publish", *common], tmp_path, env)
    return tmp_path / "html"


@pytest.mark.slow
def test_published_dashboard_lists_the_benchmarks(tmp_path):
    check = _checker()
    chromium = check.find_chromium()
    if chromium is None:
        pytest.skip("no Chromium on PATH (Debian: apt-get install -y chromium)")
    given = os.environ.get("ORTHOREF_ASV_HTML")
    if given:
        html = pathlib.Path(given)
        if not (html / "index.html").is_file():
            pytest.skip(f"ORTHOREF_ASV_HTML={given} has no index.html (run `asv publish`)")
    else:
        pytest.importorskip("asv")
        if not (ROOT / ".git").exists():
            pytest.skip("not a git checkout: asv needs the commit history")
        html = _publish(tmp_path)
    try:
        missing, listed, dom, how = check.check(html, chromium=chromium)
    except FileNotFoundError as exc:              # offline and without the local copies of the CDN scripts
        pytest.skip(str(exc))
    assert check.LOAD_FAILURE not in dom, how
    assert "airspeed velocity of an unladen orthoref" in dom         # asv.js ran and read index.json
    assert not missing, f"missing from the dashboard ({how}): {missing}; listed: {sorted(listed)}"
    assert "TrainStep.time_mlp_step" in listed
