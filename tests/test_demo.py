"""`ntkfast demo` in quick mode: accuracy, figures written, argument handling."""

import argparse

import numpy as np
import pytest

pytest.importorskip("matplotlib")
pytest.importorskip("sklearn")

from ntkfast.apps import demo  # noqa: E402

FIGURES = {"one_d", "kernel_convergence", "kernel_change", "training_vs_ntk", "spectrum",
           "eigen_dynamics"}


def test_quick_demo_writes_figures(tmp_path, capsys):
    out = tmp_path / "figs"
    res = demo.run_demo(out_dir=str(out), width=128, depth=2, quick=True, progress=True)
    assert set(res["figures"]) == FIGURES
    for path in res["figures"].values():
        data = open(path, "rb").read()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, path
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{k}.png" for k in FIGURES)
    assert res["accuracy"] > 0.9
    assert -0.8 < res["ntk_slope"] < -0.3
    assert res["timings"]["ntk"] > 0 and res["timings"]["total"] >= res["timings"]["ntk"]
    assert len(res["kernel_change"]) == len(res["widths_bc"])
    text = capsys.readouterr().out
    assert "test accuracy" in text and "slope" in text


def test_kernel_regression_interpolates():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((5, 5))
    K, Y = A @ A.T + np.eye(5), rng.standard_normal((5, 2))
    np.testing.assert_allclose(demo.kernel_regression(K, K, Y, ridge=0.0), Y, atol=1e-10)


def test_arguments_and_main(monkeypatch):
    parser = demo.add_demo_arguments(argparse.ArgumentParser())
    args = parser.parse_args(["--out", "d", "--width", "64", "--depth", "3", "--quick"])
    assert (args.out, args.width, args.depth, args.quick) == ("d", 64, 3, True)
    defaults = parser.parse_args([])
    assert (defaults.out, defaults.width, defaults.depth, defaults.quick) == \
        ("ntkfast-demo", 512, 2, False)
    seen = {}
    monkeypatch.setattr(demo, "run_demo", lambda **kw: seen.update(kw))
    assert demo.main_from_args(args) == 0
    assert seen["out_dir"] == "d" and seen["width"] == 64 and seen["quick"] is True
    with pytest.raises(SystemExit, match="--width"):
        demo.main_from_args(parser.parse_args(["--width", "0"]))


def test_bad_arguments_name_them(tmp_path):
    with pytest.raises(ValueError, match="width"):
        demo.run_demo(out_dir=str(tmp_path), width=0, quick=True, progress=False)
    with pytest.raises(ValueError, match="depth"):
        demo.run_demo(out_dir=str(tmp_path), depth=-1, quick=True, progress=False)
    with pytest.raises(ValueError, match="n_train"):
        demo.run_demo(out_dir=str(tmp_path), n_train=1797, quick=True, progress=False)
