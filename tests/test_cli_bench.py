"""The console commands and the benchmarks: they run, print what they promise, and exit as they should."""
import functools
import importlib.util
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from orthoref import bench, cli
from orthoref.oracle.registry import _REGISTRY, OpSpec, Sample

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_verify_passes_on_a_subset(capsys):
    assert cli.main(["verify", "--ops", "linear*,nn.Linear", "--fast"]) == 0
    out = capsys.readouterr().out
    assert "nn.Linear" in out and "PASS" in out and "0 failed" in out


def test_verify_fails_loudly_on_a_wrong_gradient(capsys, monkeypatch):
    def apply(x):
        return (x * 3.0,), lambda c: (c[0] * 2.0,)   # wrong: d(3x)/dx = 3
    spec = OpSpec("broken_for_test", apply, lambda rng, dt: [Sample((rng.standard_normal(4),))])
    monkeypatch.setitem(_REGISTRY, spec.name, spec)
    assert cli.main(["verify", "--ops", "broken_for_test", "--no-torch"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "1 failed" in out


def test_verify_unknown_pattern(capsys):
    assert cli.main(["verify", "--ops", "no_such_op*"]) == 2


def test_console_script_is_installed():
    out = subprocess.run([sys.executable, "-m", "orthoref.cli", "--version"], capture_output=True, text=True,
                         check=False)
    assert out.returncode == 0 and "orthoref" in out.stdout


def test_bench_runs_and_writes_json(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bench, "run", functools.partial(bench.run, gemm_n=256, warmup=0))   # quick
    path = tmp_path / "bench.json"
    assert cli.main(["bench", "--repeat", "1", "--number", "1", "--threads", "1", "--json", str(path)]) == 0
    res = json.loads(path.read_text())
    assert set(res["results"]) == {n for n, c in bench.CASES.items() if not c.get("slow")}
    assert {"conv2d_fwd_bwd", "qr_1024", "cayley_512", "expm_512"} <= set(res["results"])
    for key in ("date", "platform", "cpu", "cpu_count", "numpy", "blas", "gemm_gflops"):
        assert key in res, key
    assert res["threads"] == 1
    assert set(res["gemm_peak_gflops"]) == {"float32", "float64"}
    assert all(v > 0 for v in res["gemm_peak_gflops"].values())
    for name, row in res["results"].items():
        assert row["orthoref_s"] > 0
        assert row["flops"] == bench.CASES[name]["flops"]() > 0 and row["flops_formula"]
        assert row["target"] == bench.CASES[name].get("target")
        peak = res["gemm_peak_gflops"][row["dtype"]]
        assert row["gflops"]["orthoref"] == pytest.approx(row["flops"] / row["orthoref_s"] / 1e9)
        assert row["fraction_of_peak"]["orthoref"] == pytest.approx(row["gflops"]["orthoref"] / peak)
        if "torch" in res:
            assert row["ratio"] == pytest.approx(row["orthoref_s"] / row["torch_s"])
            assert row["fraction_of_peak"]["torch"] == pytest.approx(row["flops"] / row["torch_s"] / 1e9 / peak)
            assert row["target_met"] == (None if row["target"] is None else row["ratio"] <= row["target"])
            lo, mid, hi = row["ratio_spread"]
            assert lo <= mid <= hi
    out = capsys.readouterr().out
    assert "ratio" in out and "%peak ours" in out and "GEMM peak" in out and "min–max" in out


def test_bench_reports_the_spread_and_warns_when_it_is_large():
    row = {"about": "", "dtype": "float32", "orthoref_s": 2e-3, "torch_s": 1e-3, "ratio": 2.0, "target": 1.0,
           "target_met": False, "fraction_of_peak": {"orthoref": 0.1, "torch": 0.2}}
    res = {"orthoref": "0", "torch": "2.13.0", "date": "today", "cpu": "AMD EPYC", "cpu_count": 2, "threads": 2,
           "threads_enforced": True, "platform": "linux", "gemm_n": 64, "repeat": 4, "number": 1,
           "gemm_peak_gflops": {"float32": 100.0},
           "blas": [{"user_api": "blas", "internal_api": "openblas", "version": "0.3.30",
                     "architecture": "SkylakeX", "library": "libscipy_openblas"}],
           "results": {"steady": dict(row, ratio_spread=[1.9, 2.0, 2.1]),
                       "noisy": dict(row, ratio_spread=[0.44, 1.0, 1.33])}}
    text = bench.format_results(res)
    assert "openblas 0.3.30 SkylakeX" in text and "AMD EPYC" in text          # the CPU and BLAS kernel
    assert " 0.44–1.33" in text and " 1.90–2.10" in text
    warning = [line for line in text.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "noisy (0.44 to 1.33)" in warning[0] and "steady" not in warning[0]


def test_bench_without_torch_side():
    res = bench.run(["cayley_512"], threads=1, repeat=1, number=1, warmup=0, vs_torch=False, gemm_n=64)
    row = res["results"]["cayley_512"]
    assert "ratio" not in row and "torch" not in row["gflops"] and "torch" not in res["gemm_gflops"]
    assert "cayley_512" in bench.format_results(res)


def test_flop_formulas():
    assert bench.CASES["mlp_train_step"]["flops"]() == 2 * 128 * (3 * (784 * 512 + 512 * 256 + 256 * 10)
                                                                  - 784 * 512)
    convs = [28 * 28 * 32 * 1 * 9, 14 * 14 * 64 * 32 * 9]
    assert bench.CASES["cnn_train_step"]["flops"]() == 2 * 64 * (3 * (sum(convs) + 3136 * 10) - convs[0])
    assert bench._expm_flops(512) == 8 * 2 * 512 ** 3 + 8 * 512 ** 3 // 3          # s = 2 squarings
    assert all(c["dtype"] in ("float32", "float64") for c in bench.CASES.values())


def test_bench_rejects_unknown_case(capsys):
    assert cli.main(["bench", "--cases", "nope"]) == 2


def test_torch_twin_computes_the_same_step():
    pytest.importorskip("torch")
    for name in ("mlp_train_step", "cnn_train_step"):
        ours, theirs, _ = bench.make_case(name, rng=0)
        a, b = float(ours()), float(theirs().detach())
        assert a == pytest.approx(b, rel=1e-5), name
        a, b = float(ours()), float(theirs().detach())   # after one identical Adam step
        assert a == pytest.approx(b, rel=1e-4), name


def _asv_module(stem):
    """A module of the asv suite, imported as asv imports it: a submodule of the package
    ``asv_benchmarks/benchmarks`` (here under the name ``orthoref_asv``, so no top-level name is taken)."""
    if "orthoref_asv" not in sys.modules:
        pkg = ROOT / "asv_benchmarks" / "benchmarks"
        spec = importlib.util.spec_from_file_location("orthoref_asv", pkg / "__init__.py",
                                                      submodule_search_locations=[str(pkg)])
        sys.modules["orthoref_asv"] = module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return importlib.import_module(f"orthoref_asv.{stem}")


def test_asv_benchmarks_run_once():
    """Every asv benchmark's setup and body run once (NotImplementedError = asv's skip)."""
    import itertools
    mod = _asv_module("bench_train")
    ran = 0
    for cls_name in ("TrainStep", "TorchTrainStep"):
        cls = getattr(mod, cls_name)
        for params in itertools.product(*cls.params):
            obj = cls()
            try:
                obj.setup(*params)
            except NotImplementedError:
                continue
            for attr in dir(obj):
                if attr.startswith(("time_", "peakmem_")):
                    getattr(obj, attr)(*params)
                    ran += 1
    assert ran >= 4


def test_asv_config_is_valid_json_with_comments():
    text = (ROOT / "asv_benchmarks" / "asv.conf.json").read_text()
    body = "\n".join(ln for ln in text.splitlines() if not ln.strip().startswith("//"))
    conf = json.loads(body)
    assert conf["benchmark_dir"] == "benchmarks" and conf["repo"] == ".."


def test_small_init_and_regularizer_cases_run():
    pytest.importorskip("torch")
    ours, theirs = bench._orthogonal_case(32)(np.random.default_rng(0), "numpy")
    q = ours()
    np.testing.assert_allclose(q @ q.T, np.eye(32), atol=1e-5)
    assert tuple(theirs().shape) == (32, 32)
    ours, theirs = bench._soft_orthogonality_case((20, 8))(np.random.default_rng(0), "numpy")
    assert float(ours()[0]) == pytest.approx(float(theirs().detach()), rel=1e-5)


def test_compare_projections_prints_every_method(capsys):
    assert cli.main(["compare-projections", "--n", "16", "--dtype", "float64", "--repeat", "1",
                     "--gram-schmidt-table"]) == 0
    out = capsys.readouterr().out
    for name in ("polar (SVD)", "qr_orthogonalize", "gram_schmidt mgs", "bjorck", "newton_schulz jordan",
                 "newton_schulz polar_express (8 steps)", "| 1e+12 |"):
        assert name in out, name
    polar_row = next(ln for ln in out.splitlines() if ln.startswith("| polar (SVD)"))
    assert float(polar_row.split("|")[3]) < 1e-12        # exact method, float64: orthogonal to rounding
    assert cli.main(["compare-projections", "--n", "1"]) == 2


def test_projection_bench_cases_agree_with_torch():
    pytest.importorskip("torch")
    for name in ("newton_schulz", "polar"):
        ours, theirs = bench._projection_case(name, 24)(np.random.default_rng(0), "numpy")
        np.testing.assert_allclose(ours(), theirs().numpy(), atol=2e-4)


def test_every_asv_module_imports_and_declares_params():
    import inspect
    for path in sorted((ROOT / "asv_benchmarks" / "benchmarks").glob("bench_*.py")):
        mod = _asv_module(path.stem)
        classes = [c for _, c in inspect.getmembers(mod, inspect.isclass) if c.__module__ == mod.__name__]
        benches = [c for c in classes if any(a.startswith(("time_", "peakmem_", "track_")) for a in dir(c))]
        assert benches, f"{path.name} defines no benchmark"
        for c in benches:
            assert issubclass(c, _asv_module("common").Benchmark), f"{path.name}:{c.__name__} is no Benchmark"
            params = getattr(c, "params", ())
            names = getattr(c, "param_names", [])
            if params:
                groups = params if isinstance(params[0], (list, tuple)) else (params,)
                assert len(groups) == len(names), f"{path.name}:{c.__name__} params/param_names mismatch"
                assert all(groups), f"{path.name}:{c.__name__} has an empty parameter list"
        assert "sys.path" not in path.read_text(), f"{path.name} edits sys.path"


def test_asv_name_lists_come_from_the_package():
    """The asv suite times every regularizer and orthogonalization map of the op registry, every optimizer
    of ``orthoref.optim`` and every initializer of ``orthoref.init.INITIALIZERS``."""
    from orthoref import init, optim, regularizers
    from orthoref.oracle.registry import all_specs
    names = [s.name for s in all_specs()]
    regs = _asv_module("bench_regularizers").Regularizers.params[0]
    assert regs == [n for n in names if n in regs] and set(regularizers.REGULARIZERS) <= set(regs)
    maps = _asv_module("bench_projections")
    assert set(maps.OPS) <= set(names) and {"polar", "retract_qr", "cayley_iterative"} <= set(maps.OPS)
    assert {"gram_schmidt_mgs", "newton_schulz_polar_express"} <= set(maps.Projections.params[0])
    assert set(_asv_module("bench_optimizers").Optimizers.params[0]) >= set(optim.__all__) - {"Optimizer"}
    assert _asv_module("bench_init").Init.params[0] == list(init.INITIALIZERS)


def test_new_bench_cases_agree_with_torch():
    """Small versions of the conv, QR, Cayley and expm cases compute what their PyTorch twins compute."""
    pytest.importorskip("torch")
    ours, theirs = bench._conv_case(3, 4, 5, 6, 3, 1)(np.random.default_rng(0), "numpy")
    for a, b, what in zip(ours(), theirs(), ("y", "dx", "dw", "db")):
        np.testing.assert_allclose(a, b.detach().numpy(), rtol=1e-4, atol=1e-5, err_msg=what)
    ours, theirs = bench._qr_case(32)(np.random.default_rng(0), "numpy")
    q = ours()
    np.testing.assert_allclose(q, theirs().numpy(), atol=1e-4)
    np.testing.assert_allclose(q.T @ q, np.eye(32), atol=1e-5)
    for name in ("cayley", "expm"):
        ours, theirs = bench._skew_map_case(name, 24)(np.random.default_rng(0), "numpy")
        q = ours()
        assert q.dtype == np.float32, name
        np.testing.assert_allclose(q, theirs().numpy(), atol=1e-4, err_msg=name)
        np.testing.assert_allclose(q.T @ q, np.eye(24), atol=1e-4, err_msg=name)


def test_compare_projections_mclip_table_against_the_svd_route(capsys):
    """``--mclip-table``: the GEMM count 6·steps + 2 and the error against an SVD clip written here with NumPy;
    8 Polar Express steps reach rounding, 4 do not."""
    from orthoref.ortho.compare import mclip_table, sample_matrix
    assert cli.main(["compare-projections", "--n", "24", "--dtype", "float64", "--repeat", "1",
                     "--mclip-table"]) == 0
    out = capsys.readouterr().out
    assert "| newton_schulz | 8 | 50 |" in out and "| svd | – | – |" in out
    rows = mclip_table(n=24, dtype="float64", repeat=1, rng=0, cond=1e3, steps=(4, 8))
    A = 2 * sample_matrix(24, "float64", rng=0, cond=1e3)
    U, s, Vt = np.linalg.svd(A)
    assert np.allclose(np.sort(s), np.sort(np.geomspace(2, 2e-3, 24)))     # the documented input
    clip = (U * np.minimum(s, 1)) @ Vt
    from orthoref.ortho import mclip
    for r in rows:
        Y = mclip(A, method="svd") if r["steps"] is None else mclip(A, steps=r["steps"])
        assert r["error"] == pytest.approx(float(np.abs(Y - clip).max()), abs=1e-14)
    assert [r["gemms"] for r in rows] == [26, 50, None]
    assert rows[0]["error"] > 1e-2 and rows[1]["error"] < 1e-13 and rows[2]["error"] < 1e-14
